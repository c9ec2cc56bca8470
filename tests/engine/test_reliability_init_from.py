"""``init_from`` / ``--init-from`` (issue 9): a new run starts from a weights file.

The reference is the file itself: the freshly built model must hold exactly its tensors
before the first step (``init_exclude`` keys: the model's own initial values), the file
is recorded in config.yaml, and a resumed run never reads it again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from engine_helpers import TinyNet, blob_splits
from excite.engine import TrainConfig
from excite.engine.distributed import DistContext
from excite.engine.setup import prepare_run
from excite.engine.train import Trainer
from excite.errors import ExciteError
from reliability_helpers import CONFIG, At, no_curves, run  # noqa: F401

st = pytest.importorskip("safetensors.torch")


def _weights_file(path: Path, num_classes: int = 4, seed: int = 5) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = {k: v.clone() for k, v in TinyNet(num_classes=num_classes).state_dict().items()}
    state["norm.running_mean"] += 0.25  # buffers come from the file too
    st.save_file(state, str(path))
    return state


def test_the_new_model_holds_the_file_before_the_first_step_and_config_records_it(tmp_path: Path) -> None:
    source = _weights_file(tmp_path / "w.safetensors")
    config = TrainConfig(**CONFIG, init_from=str(tmp_path / "w.safetensors"))
    lines: list[str] = []
    trainer = Trainer(config, splits=blob_splits(), model=TinyNet(), run_dir=tmp_path / "run", resume=False,
                      callbacks=(), log=lines.append)
    trainer.start()
    own = trainer.setup.model.state_dict()
    assert own.keys() == source.keys()
    assert [k for k in own if not torch.equal(own[k], source[k])] == []
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["init_from"] == str(tmp_path / "w.safetensors") and saved["init_exclude"] == []
    assert f"initialised from {tmp_path / 'w.safetensors'}: {len(source)} tensors loaded" in lines


def test_init_exclude_keeps_a_new_head_and_mismatches_are_one_line(tmp_path: Path) -> None:
    source = _weights_file(tmp_path / "three.safetensors", num_classes=3)
    config = TrainConfig(**CONFIG, init_from=str(tmp_path / "three.safetensors"))
    with pytest.raises(ValueError) as info:
        prepare_run(config, DistContext(), splits=blob_splits(), model=TinyNet())
    message = str(info.value)
    assert message.startswith(f"init_from {tmp_path / 'three.safetensors'}: the checkpoint does not fit TinyNet")
    assert "fc.bias: checkpoint (3,) vs model (4,)" in message and "\n" not in message
    torch.manual_seed(9)
    model = TinyNet()
    head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("fc.")}
    config = TrainConfig(**CONFIG, init_from=str(tmp_path / "three.safetensors"), init_exclude=["fc.*"])
    setup = prepare_run(config, DistContext(), splits=blob_splits(), model=model)
    own = setup.model.state_dict()
    assert all(torch.equal(own[k], head[k]) for k in head)  # the new head: its own initial values
    assert all(torch.equal(own[k], source[k]) for k in own if not k.startswith("fc."))
    assert set(setup.init_report.excluded) == {"fc.weight", "fc.bias"}


def test_a_missing_or_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = TrainConfig(**CONFIG, init_from=str(tmp_path / "none.safetensors"))
    with pytest.raises(FileNotFoundError, match=r"^init_from: weights file not found: .*none.safetensors$"):
        prepare_run(missing, DistContext(), splits=blob_splits(), model=TinyNet())
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    corrupt = TrainConfig(**CONFIG, init_from=str(tmp_path / "bad.safetensors"))
    with pytest.raises(ExciteError, match=r"^init_from: .*bad.safetensors is not a readable safetensors file"):
        prepare_run(corrupt, DistContext(), splits=blob_splits(), model=TinyNet())


def test_resume_continues_from_the_state_and_never_reads_the_file_again(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    _weights_file(path)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "r", config={"init_from": str(path)}, callbacks=[At(3, lambda t: t.stop.request())])
    path.unlink()  # resuming loads state.pt only
    summary = run(tmp_path, "r", config={"init_from": str(path)}, resume=True)
    assert summary["status"] == "finished" and summary["global_step"] == 8
