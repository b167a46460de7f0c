"""``results/REPORT.md`` and its PNG plots, from every ``results/<device>/`` folder.

Order: the headline table (every GPU against the targets), then each device's numbers and plots, the devices
side by side, then where each number came from (machines, packages, each folder's ``NOTES.md``).

Plots (matplotlib, Agg): latency vs batch and vs sequence length per precision, speedup heat maps
(batch x sequence) over the CPU FP32 baseline, throughput vs concurrency, engine size / GPU memory
bars, fidelity per precision (from ``results/*/fidelity*.json`` when present), GPU time by kernel kind
(``experiments_*.json`` kernel profiles), and a cross-device table when more than one device folder exists.
Missing inputs leave their section out.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from client.fidelity import FidelityRecord, fidelity_summaries, read_results
from perf import results as rf
from perf.family_report import family_section
from perf.grid_report import gpu_comparison, grid_environment, grid_section, headline
from perf.load_report import load_section
from perf.load_targets import load_targets_section
from perf.plots import PRECISION_ORDER, bars, heatmap, image, line_plot, stacked_bars, table
from perf.precision_report import precision_section
from perf.records import DerivedRow, EngineMemory, KernelProfile, PerfPoint, SweepEnvironment
from perf.sweep import derive
from perf.tune_report import tune_section

NOTES_FILE = "NOTES.md"
GROUP_HEADERS = ["precision", "batch", "seq", "conc", "p50 ms", "infer/s", "× CPU fp32", "× fp32", "size MiB", "size saved vs fp32"]


def _pick(values: list[int], preferred: int) -> int:
    ordered = sorted(set(values))
    return preferred if preferred in ordered else ordered[len(ordered) // 2]


@dataclass(frozen=True)
class _Group:
    """The derived rows of one (model, runtime, target) and the point its line plots hold fixed."""

    model: str
    runtime: str
    target: str
    rows: list[DerivedRow]

    @property
    def tag(self) -> str:
        return f"{self.model}_{self.runtime}_{self.target}"

    @property
    def seq(self) -> int:
        return _pick([r.seq_len for r in self.rows], 128)

    @property
    def batch(self) -> int:
        return _pick([r.batch_size for r in self.rows], 1)

    @property
    def conc(self) -> int:
        return min(r.concurrency for r in self.rows)


def _groups(rows: list[DerivedRow]) -> list[_Group]:
    """Rows by (model, runtime, target), in that order."""
    groups: dict[tuple[str, str, str], list[DerivedRow]] = defaultdict(list)
    for row in rows:
        groups[(row.model, row.runtime, row.target)].append(row)
    return [_Group(*name, rows) for name, rows in sorted(groups.items())]


def _device_section(device_dir: Path, out: Path, plots: Path) -> list[str]:
    """A device folder's numbers: each measured group, engines, failures, then the request breakdown, the
    engine-only grid, kernel profiles, fidelity, families and load (where they came from is in ``_provenance``)."""
    rows = derive(device_dir)
    perf = list(rf.latest_by_key(rf.read_records(device_dir / rf.PERF_FILE, PerfPoint)).values())
    errors = [r for r in perf if not r.ok]
    md = [f"## {device_dir.name}\n", f"{len(perf) - len(errors)} configurations measured, {len(errors)} failed.\n"]
    plots.mkdir(parents=True, exist_ok=True)
    for group in _groups(rows):
        md.extend(_group_section(group, out, plots))
    md.extend(_engines_section(device_dir, out, plots))
    md.extend(_failures_section(errors))
    md.extend(_hops_section(perf, out, plots))
    md.extend(grid_section(device_dir, out, plots))
    md.extend(_kernel_section(device_dir, out, plots))
    md.extend(_fidelity_section(device_dir, out, plots))
    md.extend(family_section(device_dir))
    md.extend(load_targets_section(device_dir))
    md.extend(load_section(device_dir, out, plots))
    md.extend(tune_section(device_dir))
    md.extend(precision_section(device_dir, out))
    return md


def _provenance(device_dirs: list[Path]) -> list[str]:
    """Where each number came from, per device: the machine and packages of its last sweep and grid run, then
    the notes of whoever ran them (their headings two levels down, under the device's)."""
    md = ["## Where each number came from\n"]
    for device_dir in device_dirs:
        md += [f"### {device_dir.name}\n", *_environment(device_dir), *grid_environment(device_dir), *_notes(device_dir)]
    return md


def _notes(device_dir: Path) -> list[str]:
    """How and when these numbers were taken, written by whoever ran them."""
    notes = device_dir / NOTES_FILE
    if not notes.is_file():
        return []
    return ["\n".join("##" + line if line.startswith("#") else line for line in notes.read_text().strip().splitlines()) + "\n"]


def _environment(device_dir: Path) -> list[str]:
    """One line on the last sweep's machine, build manifest and packages."""
    environments = rf.read_records(device_dir / rf.ENVIRONMENT_FILE, SweepEnvironment)
    if not environments:
        return []
    last = environments[-1]
    device = last.device_info
    return [
        f"GPU: {device.get('gpu') or 'none'} · driver {device.get('driver') or '–'} · CUDA "
        f"{device.get('cuda') or '–'} · CPU {device.get('cpu')} ({device.get('cpu_count')} cores) · "
        f"build manifest {last.manifest_hash or '–'} · " + ", ".join(f"{k} {v}" for k, v in sorted(last.packages.items())) + "\n"
    ]


def _group_section(group: _Group, out: Path, plots: Path) -> list[str]:
    """A group's plots, then its table."""
    md = [f"### {group.model} · {group.runtime} · {group.target}\n"]
    for path in _group_plots(group, plots):
        image(md, path, out)
    md.append(_group_table(group.rows) + "\n")
    return md


def _group_plots(group: _Group, plots: Path) -> list[Path | None]:
    """Latency vs batch and vs length, throughput vs concurrency (each at the group's fixed point), and a heat
    map of the speedup over the CPU per precision."""
    model, tag, seq, batch, conc = group.model, group.tag, group.seq, group.batch, group.conc
    at_seq = [r for r in group.rows if r.seq_len == seq and r.concurrency == conc]
    at_batch = [r for r in group.rows if r.batch_size == batch and r.concurrency == conc]
    at_point = [r for r in group.rows if r.seq_len == seq and r.batch_size == batch]
    paths = [
        line_plot(
            ((r.precision, r.batch_size, r.latency_p50_ms) for r in at_seq),
            f"{model} p50 latency vs batch (seq {seq}, concurrency {conc})",
            "batch size",
            "p50 latency (ms)",
            plots / f"latency_vs_batch_{tag}.png",
            log_x=True,
        ),
        line_plot(
            ((r.precision, r.seq_len, r.latency_p50_ms) for r in at_batch),
            f"{model} p50 latency vs sequence (batch {batch}, concurrency {conc})",
            "sequence length",
            "p50 latency (ms)",
            plots / f"latency_vs_seq_{tag}.png",
            log_x=True,
        ),
        line_plot(
            ((r.precision, r.concurrency, r.throughput) for r in at_point),
            f"{model} throughput vs concurrency (batch {batch}, seq {seq})",
            "concurrency",
            "throughput (infer/s)",
            plots / f"throughput_vs_concurrency_{tag}.png",
        ),
    ]
    for precision in PRECISION_ORDER:
        chosen = [r for r in group.rows if r.precision == precision and r.concurrency == conc]
        speedups = ((r.batch_size, r.seq_len, r.speedup_vs_cpu) for r in chosen)
        paths.append(heatmap(speedups, f"{model} {precision}: speedup over CPU FP32", plots / f"speedup_vs_cpu_{tag}_{precision}.png"))
    return paths


def _group_table(rows: list[DerivedRow]) -> str:
    ordered = sorted(rows, key=lambda r: (PRECISION_ORDER.index(r.precision), r.batch_size, r.seq_len, r.concurrency))
    return table(
        GROUP_HEADERS,
        (
            [
                r.precision,
                r.batch_size,
                r.seq_len,
                r.concurrency,
                r.latency_p50_ms,
                r.throughput,
                r.speedup_vs_cpu,
                r.speedup_vs_fp32,
                r.file_size_mib,
                r.memory_reduction_file_size,
            ]
            for r in ordered
        ),
    )


def _engines_section(device_dir: Path, out: Path, plots: Path) -> list[str]:
    """Each engine's file size and GPU memory: a bar plot and a table."""
    engines = [r for r in rf.latest_by_key(rf.read_records(device_dir / rf.ENGINES_FILE, EngineMemory)).values() if r.ok]
    if not engines:
        return []
    engines.sort(key=lambda r: (r.model, r.runtime, PRECISION_ORDER.index(r.precision)))
    md = ["### Engine memory\n"]
    series: dict[str, list[float | None]] = {
        "file MiB": [r.file_size_mib for r in engines],
        "GPU MiB": [r.gpu_memory_mib for r in engines],
    }
    image(md, bars([r.key for r in engines], series, "engine size and GPU memory", "MiB", plots / "memory.png"), out)
    md.append(table(["engine", "file MiB", "GPU MiB"], ([r.key, r.file_size_mib, r.gpu_memory_mib] for r in engines)) + "\n")
    return md


def _failures_section(errors: list[PerfPoint]) -> list[str]:
    if not errors:
        return []
    rows = ([r.key, str(r.error or "")[-200:]] for r in errors)
    return ["### Failed configurations\n", table(["configuration", "error"], rows) + "\n"]


def request_breakdown(record: PerfPoint) -> dict[str, float] | None:
    """An ensemble record's average request split into where it went (ms): gRPC and client (perf_analyzer's
    send, network and receive), each step's queue and compute (Triton's statistics), and the ensemble's own
    time between its steps. None without per-model statistics (``hops``)."""
    hops, metrics = record.hops or {}, record.metrics or {}
    ensemble = hops.get(record.triton_model)
    if ensemble is None:
        return None
    parts = {"gRPC and client": sum(metrics.get(k, 0.0) for k in ("client_send", "network_server_send_recv", "client_recv"))}
    steps = 0.0
    for name, hop in sorted(hops.items(), key=lambda item: not item[0].endswith("_tokenizer")):  # tokenizer first
        if name == record.triton_model:
            continue
        role = "tokenizer" if name.endswith("_tokenizer") else "engine"
        compute = hop["compute_input_us"] + hop["compute_infer_us"] + hop["compute_output_us"]
        parts[f"{role} queue"] = hop["queue_us"] / 1000.0
        parts[f"{role} compute"] = compute / 1000.0
        steps += hop["request_us"]
    parts["ensemble between steps"] = max(0.0, (ensemble["request_us"] - steps) / 1000.0)
    return parts


def _hops_section(perf: list[PerfPoint], out: Path, plots: Path, batch: int = 1, seq: int = 128) -> list[str]:
    chosen = [r for r in perf if r.ok and r.target == "ensemble" and r.batch_size == batch and r.seq_len == seq and r.concurrency == 1]
    rows = [(r, parts) for r in sorted(chosen, key=lambda r: r.key) if (parts := request_breakdown(r)) is not None]
    if not rows:
        return []
    names = list(dict.fromkeys(name for _, parts in rows for name in parts))
    md = [
        f"### Where a request's time goes (text ensembles, batch {batch}, sequence {seq}, concurrency 1)\n",
        "Averages over each perf_analyzer run, in ms: gRPC and client from its CSV, each step's queue and compute "
        "(input, infer, output) from Triton's per-model statistics, and the ensemble's own time between its steps "
        "(its end-to-end time less its steps'). The p50 beside them is the run's median.\n",
    ]
    labels = [r.triton_model for r, _ in rows]
    series = {name: [parts.get(name, 0.0) for _, parts in rows] for name in names}
    image(
        md,
        stacked_bars(labels, series, f"average request at b{batch} s{seq} c1", "ms", plots / f"request_breakdown_b{batch}_s{seq}.png"),
        out,
    )
    md.append(
        table(
            ["ensemble", "p50 ms", *names],
            ([r.triton_model, r.metric("latency_p50"), *(parts.get(n) for n in names)] for r, parts in rows),
        )
        + "\n"
    )
    return md


def kernel_profiles(device_dir: Path) -> list[KernelProfile]:
    """One row per (model, shape, mode) of the ``kernel_profile`` experiments (``scripts/gpu_experiments.py``)
    in ``<device>/experiments_*.json``."""
    return [profile for experiments in rf.read_experiments(device_dir) for profile in experiments.kernel_profiles()]


def _kernel_section(device_dir: Path, out: Path, plots: Path) -> list[str]:
    rows = kernel_profiles(device_dir)
    if not rows:
        return []
    md = [
        "### Where the GPU time of one FP16 run goes (kernel profiles)\n",
        'CUPTI through torch.profiler over ONNX Runtime\'s CUDA runs; µs per run. "between" is the wall time of a run '
        "less the time kernels were busy: launch gaps, most of which a CUDA graph replay removes.\n",
    ]
    labels = [f"{r.model} {r.shape} {r.mode.replace('_', ' ')}" for r in rows]
    us = [r.us_by_kind() for r in rows]
    # The kinds the experiments script classified kernels into, biggest first.
    kinds = sorted({kind for per_kind in us for kind in per_kind}, key=lambda kind: -sum(per_kind.get(kind, 0.0) for per_kind in us))
    series = {kind: [per_kind.get(kind, 0.0) for per_kind in us] for kind in kinds}
    series["between kernels"] = [max(0.0, float(r.between_kernels_us or 0.0)) for r in rows]
    for scale, indices in (
        ("short", [i for i, r in enumerate(rows) if r.wall_median_us < 5000]),
        ("long", [i for i, r in enumerate(rows) if r.wall_median_us >= 5000]),
    ):
        if indices:
            picked = {kind: [values[i] for i in indices] for kind, values in series.items()}
            path = plots / f"kernels_{scale}.png"
            image(md, stacked_bars([labels[i] for i in indices], picked, "GPU time per run by kernel kind", "µs per run", path), out)
    md.append(
        table(
            ["model", "shape", "mode", "code", "wall µs", "kernels", "busy µs", "between µs", *kinds],
            (
                [r.model, r.shape, r.mode, r.code, r.wall_median_us, r.kernels_per_run, r.kernel_busy_us, r.between_kernels_us]
                + [per_kind.get(kind, 0.0) for kind in kinds]
                for r, per_kind in zip(rows, us, strict=True)
            ),
        )
        + "\n"
    )
    return md


def read_fidelity(device_dir: Path) -> list[FidelityRecord]:
    """The records of every ``fidelity*.json`` (``python -m client fidelity``); [] if none. An unreadable file is left out."""
    records: list[FidelityRecord] = []
    for path in sorted(device_dir.glob("fidelity*.json")):
        try:
            records += read_results(path)
        except (OSError, ValueError):
            continue
    return records


def _fidelity_section(device_dir: Path, out: Path, plots: Path) -> list[str]:
    """Served fidelity against the FP32 reference by model and precision: a bar plot of the cosines and a table."""
    summaries = fidelity_summaries(read_fidelity(device_dir))
    if not summaries:
        return []
    md = [
        "### Fidelity\n",
        "Served outputs against the FP32 ONNX reference (`python -m client fidelity`): the worst output over every case "
        "(inputs x batch x length) of each model and precision. Cosines on real text only: random ids are far from any "
        "real input, and their cosine is not judged; NaN and Inf rates on every input.\n",
    ]
    labels = [f"{s.model} {s.precision}" for s in summaries]
    cosines: dict[str, list[float | None]] = {
        "cosine min": [s.cosine_min for s in summaries],
        "cosine mean": [s.cosine_mean for s in summaries],
    }
    image(md, bars(labels, cosines, "fidelity vs precision", "cosine similarity", plots / "fidelity.png"), out)
    headers = ["model", "precision", "cases", "cosine min", "cosine mean", "NaN rate", "Inf rate"]
    md.append(table(headers, (s.row() for s in summaries)) + "\n")
    return md


def _cross_device(device_dirs: list[Path]) -> list[str]:
    by_key: dict[str, dict[str, float | None]] = defaultdict(dict)
    for device_dir in device_dirs:
        for row in derive(device_dir):
            by_key[row.key][device_dir.name] = row.latency_p50_ms
    shared = {k: v for k, v in by_key.items() if len(v) > 1}
    if not shared:
        return []
    names = [d.name for d in device_dirs]
    return [
        "## Across devices (p50 latency, ms)\n",
        table(["configuration", *names], ([k, *(v.get(n) for n in names)] for k, v in sorted(shared.items()))) + "\n",
    ]


def write_report(out: Path = Path("results")) -> Path:
    """Write ``out/REPORT.md`` and ``out/plots/<device>/*.png``; return the report's path."""
    out = Path(out)
    device_dirs = list(rf.device_dirs(out))
    md = [
        "# Performance report\n",
        "The headline table first, then every device's numbers and plots, then where each number came from.\n",
        *headline(device_dirs),
        (
            "Latencies are perf_analyzer p50 through Triton (client side); speedups divide the CPU FP32 "
            "ONNX Runtime baseline (engine only, same inputs) or the FP32 engine's p50 by this p50; "
            "memory reductions compare engine sizes (and GPU memory when measured) with FP32.\n"
        ),
    ]
    if not device_dirs:
        md.append(f"No measurements under {out}/<device>/ yet: run `python -m perf sweep` first.\n")
    for device_dir in device_dirs:
        md.extend(_device_section(device_dir, out, out / "plots" / device_dir.name))
    if len(device_dirs) > 1:
        md.extend(_cross_device(device_dirs))
        md.extend(gpu_comparison(device_dirs))
    if device_dirs:
        md.extend(_provenance(device_dirs))
    report = out / "REPORT.md"
    out.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(md))
    return report
