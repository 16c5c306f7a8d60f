"""How qwenscribe opens ONNX Runtime sessions: which ones let idle threads spin."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from qwenscribe.runtimes.onnx_session import open_session

SPINNING = "session.intra_op.allow_spinning"


def _identity_graph(path) -> None:
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [value], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))


def test_idle_threads_spin_only_where_asked(tmp_path) -> None:
    """Spinning idle threads take a core from the session that runs next (2 cores: the aligner's
    encoder 1.5x slower): off unless a session asks for it (the recognizer's decoder), which
    then keeps ONNX Runtime's default (spinning on) between the products of a call only."""
    path = tmp_path / "identity.onnx"
    _identity_graph(path)
    quiet = open_session(path, "fp32", "CPUExecutionProvider", threads=2)
    assert quiet.get_session_options().get_session_config_entry(SPINNING) == "0"
    spinning = open_session(path, "fp32", "CPUExecutionProvider", threads=2, spinning=True)
    options = spinning.get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):
        options.get_session_config_entry(SPINNING)
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
