"""Moonshine's int8 files: made once from the wheel, kept, and a failed conversion says why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from presales_ws.transcribers import moonshine_files
from presales_ws.transcribers.moonshine import default_model_dir


def test_the_prepared_files_are_made_once_and_then_reused() -> None:
    first = moonshine_files.prepared_dir(default_model_dir())
    stamps = {name: (first / name).stat().st_mtime_ns for name in moonshine_files.FILES}
    again = moonshine_files.prepared_dir(default_model_dir())
    assert again == first
    assert {name: (again / name).stat().st_mtime_ns for name in moonshine_files.FILES} == stamps
    assert not [p for p in first.parent.iterdir() if p.name.startswith(f"{first.name}.") and p.is_dir()]


def test_a_source_that_cannot_be_converted_fails_clearly_and_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "base-en"
    source.mkdir()
    (source / "encoder_model.ort").write_bytes(b"not a model")
    (source / "decoder_model_merged.ort").write_bytes(b"not a model")
    cache = tmp_path / "cache"
    with pytest.raises(moonshine_files.PreparationFailed, match="making Moonshine's int8 files"):
        moonshine_files.prepared_dir(source, cache)
    assert [p.name for p in cache.iterdir() if p.is_dir()] == []  # no half-made directory to trust later


def test_make_setup_s_command_makes_the_files_into_an_empty_cache(tmp_path: Path) -> None:
    """What `make setup` runs on a fresh machine: `python -m` of the module, which converts in a child."""
    done = subprocess.run(
        [sys.executable, "-m", "presales_ws.transcribers.moonshine_files"],
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    made = Path(done.stdout.strip())
    assert made.parent == tmp_path / "presales-ws"
    assert all((made / name).stat().st_size > 10_000_000 for name in moonshine_files.FILES)


def test_later_steps_read_the_keys_the_first_step_hands_them() -> None:
    """Cross-attention's keys cross over transposed and scaled, as the product reads them: later steps no longer
    take the plain keys (the work they did on them each step is done once)."""
    import onnxruntime as ort

    prepared = moonshine_files.prepared_dir(default_model_dir())
    first = ort.InferenceSession(str(prepared / moonshine_files.FIRST_STEP), providers=["CPUExecutionProvider"])
    later = ort.InferenceSession(str(prepared / moonshine_files.NEXT_STEPS), providers=["CPUExecutionProvider"])
    handed = [o.name for o in first.get_outputs() if o.name.endswith(".encoder.scaled_key_t")]
    read = {i.name for i in later.get_inputs()}
    assert len(handed) == 8
    assert {name.replace("present.", "past_key_values.") for name in handed} <= read
    assert not [name for name in read if name.endswith(".encoder.key")]


def test_every_attention_rotates_half_its_queries_and_keys_by_one_float_product() -> None:
    """8 layers x queries and keys: each a MatMul with a constant +-1 matrix (not quantized: int8 would round)."""
    import onnx

    prepared = moonshine_files.prepared_dir(default_model_dir())
    for name in moonshine_files.FILES:
        model = onnx.load(str(prepared / name), load_external_data=False)
        rotations = [n for n in model.graph.node if n.name.endswith(f"/{moonshine_files.ROTATION}")]
        assert len(rotations) == 16, name
        assert {n.op_type for n in rotations} == {"MatMul"}, name
        assert not [n for n in model.graph.node if n.op_type == "Neg"], name
