"""`python -m charrnn.bench.memory` (make bench-memory): three cells trained equally, each inspected,
the curves side by side. Run here with a few steps, so that the documented command keeps working."""

from charrnn.bench import memory
from conftest import SHAKESPEARE_LIKE


def test_the_memory_bench_trains_each_cell_once_and_tables_their_curves(tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SHAKESPEARE_LIKE * 3)
    runs = tmp_path / "runs"
    monkeypatch.setattr(memory, "TRAINING", [*memory.TRAINING, "--hidden-size", "16", "--seq-len", "16"])
    memory.main([str(corpus), "--runs", str(runs), "--steps", "3", "--chars", "300"])
    shown = capsys.readouterr().out
    assert "| cell | best val | k=1 | k=2 | k=4 | k=8 | k=16 | k=32 | k=64 | k=128 | k=256 | full |" in shown
    assert "| cell | k=1 | k=2 | k=4 | k=8 | k=16 | k=32 | k=64 | k=128 | k=256 |" in shown
    for cell in memory.CELLS:
        curve, decay = [line.strip("| ").split(" | ") for line in shown.splitlines() if line.startswith(f"| {cell} |")]
        assert len(curve) == 1 + 1 + 10 and all(float(x) > 0 for x in curve[1:]), curve
        assert len(decay) == 1 + 9, decay

    trained = {cell: (runs / f"memory-{cell}" / "best.npz").stat().st_mtime_ns for cell in memory.CELLS}
    memory.main([str(corpus), "--runs", str(runs), "--steps", "3", "--chars", "300"])
    assert {cell: (runs / f"memory-{cell}" / "best.npz").stat().st_mtime_ns for cell in memory.CELLS} == trained
