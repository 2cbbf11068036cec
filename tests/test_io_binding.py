"""IO binding, the CUDA path's way of running the network, checked on the CPU provider.

No GPU in CI: the choice of path is a pure function of the session's providers, and the binding
path itself runs on any provider, so here it must give exactly session.run's maps and boxes.
"""

from __future__ import annotations

import numpy as np
import pytest

from detector import TextDetection
from detector.cuda_provider import CUDA_PROVIDER
from detector.session import CPU_PROVIDER
from detector.session_run import run_session, uses_io_binding
from tests.rendered import write_rendered_pages

pytestmark = pytest.mark.runtime


@pytest.mark.parametrize(
    "providers,expected",
    [
        ([CUDA_PROVIDER, CPU_PROVIDER], True),
        ((CUDA_PROVIDER,), True),
        ([CPU_PROVIDER], False),
        ([CPU_PROVIDER, CUDA_PROVIDER], False),  # CUDA listed but not the provider in use
        (["TensorrtExecutionProvider", CUDA_PROVIDER, CPU_PROVIDER], False),
        ([], False),
    ],
)
def test_io_binding_only_when_cuda_runs_the_session(providers, expected):
    assert uses_io_binding(providers) is expected


@pytest.fixture(scope="module")
def model(default_onnx):
    with TextDetection(model_dir=default_onnx.parent, device="cpu") as model:
        yield model


def test_a_cpu_session_runs_without_binding(model):
    assert model._io_binding is False


def test_bound_run_gives_session_runs_maps(model):
    batch = np.random.default_rng(0).standard_normal((2, 3, 96, 160)).astype(np.float32)
    session, names = model._session, (model._input_name, model._output_name)
    plain = run_session(session, *names, batch)
    bound = run_session(session, *names, batch, io_binding=True)
    assert bound.shape == plain.shape == (2, 96, 160) and bound.dtype == np.float32
    np.testing.assert_array_equal(bound, plain)
    # a view that is not contiguous is bound as a copy, not misread
    strided = np.ascontiguousarray(np.concatenate([batch, batch], axis=3))[..., ::2]
    np.testing.assert_array_equal(
        run_session(session, *names, strided, io_binding=True), run_session(session, *names, strided)
    )


def test_predict_through_the_binding_path_gives_the_same_boxes(model, tmp_path, monkeypatch):
    paths = [path for path, _ in write_rendered_pages(tmp_path).values()]
    plain = model.predict(paths, batch_size=2)
    monkeypatch.setattr(model, "_io_binding", True)  # what a CUDA session chooses
    bound = model.predict(paths, batch_size=2)
    assert sum(len(r["dt_polys"]) for r in plain) > 0
    for a, b in zip(plain, bound):
        np.testing.assert_array_equal(a["dt_polys"], b["dt_polys"])
        assert a["dt_scores"] == b["dt_scores"]
