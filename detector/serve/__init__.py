"""`detect serve`: the detector behind HTTP (extra [serve]: FastAPI + uvicorn).

app.py builds the FastAPI application (envelope, limits, routes); command.py is the click command.
Nothing here is imported by `import detector`: FastAPI is loaded only when a server is built.
"""
