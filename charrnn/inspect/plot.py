"""`charrnn inspect --plot`: gate saturation as Karpathy, Johnson and Fei-Fei drew it (each unit a
point: its share of steps left-saturated against right-saturated), the memory curve and the
gradient's decay, side by side (matplotlib, the `[plot]` extra, drawn without a display)."""

from __future__ import annotations

from charrnn.errors import UserError
from charrnn.extras import install_command


def pyplot_for(output):
    """matplotlib's pyplot, drawing without a display, once it is known to write `output`'s format
    (checked before the text is read, not after)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError(f"--plot needs matplotlib: {install_command('plot')}") from None
    kind = output.path.suffix.lstrip(".").lower() or "png"
    if kind not in plt.figure().canvas.get_supported_filetypes():
        plt.close("all")
        raise UserError(f"{output.path}: matplotlib cannot write .{kind} files; use .png, .svg or .pdf")
    plt.close("all")
    return plt


def plot_report(report, output, title: str):
    """Draw `report` (an `inspect.report.Report`) into `output` (a checked `OutputFile`)."""
    plt = pyplot_for(output)
    figure, (gates, memory, decay) = plt.subplots(1, 3, figsize=(15, 4.5))
    for (layer, gate), (left, right) in report.saturation_units.items():
        gates.scatter(left, right, s=8, alpha=0.6, label=f"layer {layer + 1} {gate}")
    gates.plot([0, 1], [1, 0], color="#bbb", lw=0.8)
    gates.set(xlim=(0, 1), ylim=(0, 1), xlabel="fraction left-saturated (< 0.1)",
              ylabel="fraction right-saturated (> 0.9)",
              title="gate saturation")
    if report.saturation_units:
        gates.legend(fontsize="small")
    points = [(k, x) for k, x in report.memory if k != "full"]
    if points:
        memory.plot([k for k, _ in points], [x for _, x in points], "o-")
        memory.set_xscale("log", base=2)
    full = [x for k, x in report.memory if k == "full"]
    if full:
        memory.axhline(full[0], color="C1", ls="--", label="whole text before it")
        memory.legend(fontsize="small")
    memory.set(xlabel="tokens the model may read (k)", ylabel="nats per token", title="memory curve")
    if report.decay:
        decay.plot([k for k, _ in report.decay], [x for _, x in report.decay], "o-")
        decay.set_xscale("log", base=2)
        decay.set_yscale("log")
    decay.set(xlabel="lag k", ylabel="|d loss_t / d h_(t-k)|", title="gradient decay")
    for axis in (gates, memory, decay):
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    kind = output.path.suffix.lstrip(".").lower() or "png"
    try:
        with output.writer() as handle:
            figure.savefig(handle, format=kind, dpi=100)
    finally:
        plt.close(figure)
