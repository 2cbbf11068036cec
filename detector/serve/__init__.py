"""`detect serve`: the detector behind HTTP (extra [serve]: FastAPI + uvicorn).

app.py builds the FastAPI application (its routes and refusals) from detect_request.py (reading a request),
inference.py (the model and a request's pages), envelope.py (every answer's shape and JSON), openapi.py,
limits.py (the inference queue, body cap and timeouts) and connection.py (uvicorn's protocol); worker.py is the
process around it (uvicorn's log format, the --workers factory); command.py is the click command.
Nothing here is imported by `import detector`: FastAPI is loaded only when a server is built.
"""
