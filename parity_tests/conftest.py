import json
import warnings

from parity_tests import harness

# pytorch_pretrained_bert uses torch's deprecated add_(Number, Tensor) overload.
warnings.filterwarnings("ignore", message="This overload of add_ is deprecated")


def pytest_addoption(parser):
    parser.addoption("--parity-report", default=None,
                     help="write every measured parity figure to this JSON file")


def pytest_sessionfinish(session):
    path = session.config.getoption("--parity-report")
    if not path:
        return
    worker = getattr(session.config, "workerinput", {}).get("workerid")
    if worker is not None:  # pytest-xdist: one file per worker, merged by the caller
        path = f"{path}.{worker}"
    with open(path, "w") as f:
        json.dump(harness.MEASURED, f)
