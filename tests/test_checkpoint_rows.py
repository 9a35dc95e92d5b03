"""Models trained elsewhere, scored as rows of a suite without training: the robustness CPU twin with a
RepDistiller-format checkpoint in place of its trained methods."""
import hashlib
import json
from pathlib import Path

import torch

from tekapbench.cli import main
from tekapbench.models import create_model

ROOT = Path(__file__).resolve().parent.parent


def robustness_twin_scoring(tmp_path: Path, checkpoint_entries: str) -> Path:
    """suites/robustness_cpu.toml with its teacher given as a checkpoint and its methods replaced by
    ``checkpoint_entries``: nothing trains, every evaluation runs."""
    text = (ROOT / "suites" / "robustness_cpu.toml").read_text()
    head, evaluations = text.split("[[methods]]", 1)[0], "[[evaluations]]" + text.split("[[evaluations]]", 1)[1]
    torch.manual_seed(0)
    teacher = tmp_path / "teacher.pth"
    torch.save({"model": create_model("resnet20_tiny", 10).state_dict(), "epoch": 240, "best_acc": 0.0}, teacher)
    head = head.replace('student = "resnet8_tiny"', f'student = "resnet8_tiny"\nteacher_checkpoint = "{teacher}"')
    head = head.replace('name = "robustness_cpu"', 'name = "scored"')
    suite = tmp_path / "scored.toml"
    suite.write_text(head + checkpoint_entries + "\n" + evaluations)
    return suite


def test_a_repdistiller_checkpoint_is_scored_by_every_evaluation_and_shown_as_a_row(tmp_path, capsys):
    weights = []
    for seed in (0, 1):
        torch.manual_seed(10 + seed)
        path = tmp_path / f"theirs_{seed}.pth"
        # RepDistiller's train_student.py saves {'epoch', 'model', 'best_acc'}; DataParallel adds 'module.'
        state = {f"module.{k}": v for k, v in create_model("resnet8_tiny", 10).state_dict().items()}
        torch.save({"epoch": 240, "model": state, "best_acc": 0.0}, path)
        weights.append(path)
    entries = "".join(f'\n[[checkpoints]]\nlabel = "Theirs"\narch = "resnet8_tiny"\npath = "{p}"\n'
                      f'dataset = "digits"\nseed = {seed}\n' for seed, p in enumerate(weights))
    suite = robustness_twin_scoring(tmp_path, entries)
    assert main(["run", str(suite), "--results", str(tmp_path / "results"), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "| Theirs" in out and "robustness summary" in out
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "scored").rglob("record.json")]
    scored = [r for r in records if r["cells"][0]["row"] == "Theirs"]
    assert len(scored) == 2 and {r["cells"][0]["seed"] for r in scored} == {0, 1}
    for record, path in zip(sorted(scored, key=lambda r: r["cells"][0]["seed"]), weights):
        assert record["spec"]["kind"] == "pretrained" and record["metrics"]["epochs"] == 0
        assert record["spec"]["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        evaluations = {p.name.split("-")[0] for p in (tmp_path / "results" / "scored" / "runs" /
                                                       record["run_id"]).rglob("*.json") if "-" in p.name}
        assert {"adversarial", "calibration", "fidelity", "corruptions"} <= evaluations
    assert main(["table", "--results", str(tmp_path / "results"), "--layout", "calibration", "--format", "json"]) == 0
    table = json.loads(capsys.readouterr().out)[0]
    assert table["rows"] == ["Teacher", "Theirs"]
    theirs = next(c for c in table["cells"] if c["row"] == "Theirs" and c["column"] == "ECE (%)")
    assert theirs["n"] == 2  # the two checkpoints are the row's two seeds
