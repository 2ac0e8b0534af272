"""The scoring benchmark's report: the machine it ran on, and results as JSON and Markdown."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


def machine_info() -> dict[str, Any]:
    import onnxruntime
    import PIL
    import torch
    import torchvision

    cpu = ""
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "loadavg_start": os.getloadavg(),
    }


def write_report(results: dict[str, Any], out_dir: Path, name: str = "scoring") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    info, rounds, backends = results["machine"], results["rounds"], results["backends"]
    lines = [
        "# Scoring throughput (images/s)",
        "",
        f"{info['nproc']} cores ({info['cpu']}), onnxruntime {info['onnxruntime']}, "
        f"Pillow {info['pillow']}, torch {info['torch']}, torchvision {info['torchvision']}, "
        f"numpy {info['numpy']}. Load average at start {info['loadavg_start']}, at end "
        f"{info['loadavg_end']}: the cores are shared with other work, so the numbers are "
        "noisy; trust ratios more than absolute values.",
        "",
        "- a: model only, ORT FP32, 2 processes x 1 thread, batch 8, preloaded tensors",
        "- b: decode + preprocess only, herpscore load_rgb + to_array (JPEG draft), 2 processes",
        "- b_naive: Image.open().convert('RGB').resize((224, 224)) + to_array, 2 processes",
        "- L = 1/(1/a + 1/b): the rate if decode and inference took turns on the same cores; "
        "a and b are measured just before and just after each round's jobs, and L is the mean "
        "of the two L's (a and b in the table: the means of their two measurements)",
        f"- c: herpscore end to end, {results['end_to_end_label']}, one job per backend per "
        "round: pg = PostgreSQL + Redis, emb = the embedded default (SQLite + filesystem "
        "broker); the workers `herpscore up` runs (scoring: 2 processes x 1 ORT thread; scan: "
        "its own worker), default settings except display copies "
        f"({'on' if results['display_copies'] else 'off'}: see docs/performance.md); the "
        "clock runs from the job's creation to its completion as recorded by the database",
        "- c_pipe: the inference pipeline alone (score_paths in 2 processes, chunks of 64)",
        f"- d: torchvision ImageFolder + DataLoader(batch 8, num_workers="
        f"{results['naive_num_workers']}) + Resize(256)/CenterCrop(224)/ToTensor/Normalize "
        "+ torch eager in no_grad (torch's default intra-op threads)",
        f"- mode: {results['mode']}; {rounds} rounds, each measuring a, b, c (one job per "
        "backend, in alternating order), a, b, c_pipe and d back to back; rates are medians "
        "over the rounds, and so is each ratio, taken within its round; b_naive: "
        f"{results['repeats_naive']} round per photo size, shared by both models",
        "",
    ]
    short = {"postgres": "pg", "embedded": "emb"}
    head = ["model", "photos", "n", "a", "b", "b_naive", "L"]
    head += [f"c {short[b]}" for b in backends] + ["c_pipe", "d"]
    head += [f"**c/L {short[b]}**" for b in backends] + ["c_pipe/L"]
    head += [f"c/d {short[b]}" for b in backends] + ["b/b_naive"]
    head += [f"c/L {short[b]} by round" for b in backends]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in results["rows"]:
        per = row["backends"]
        cells = [row["model"], row["photos"], str(row["count"])]
        cells += [f"{row[k]:.1f}" for k in ("a", "b", "b_naive", "L")]
        cells += [f"{per[b]['c']:.1f}" for b in backends]
        cells += [f"{row['c_pipe']:.1f}", f"{row['d']:.1f}"]
        cells += [f"**{per[b]['c_over_L']:.2f}**" for b in backends]
        cells += [f"{row['c_pipe_over_L']:.2f}"]
        cells += [f"{per[b]['c_over_d']:.2f}" for b in backends]
        cells += [f"{row['b_over_b_naive']:.2f}"]
        cells += [" ".join(f"{r['c'][b] / r['L']:.2f}" for r in row["rounds"]) for b in backends]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Where a job's CPU goes (ms of CPU per image, medians over the rounds)",
        "",
        "Read from /proc for each group of processes while the job ran (up to the 0.5 s poll "
        "that saw it end). 'ideal' is 2 cores / L: decode and inference alone. 'other' is "
        "everything else on the machine, the benchmark's own process and other users "
        "included.",
        "",
    ]
    groups = sorted(
        {g for row in results["rows"] for b in backends for g in row["backends"][b]["cpu"]}
    )
    lines += ["| model | photos | backend | ideal | " + " | ".join(groups) + " | total |"]
    lines += ["|---|---|---|---|" + "---|" * (len(groups) + 1)]
    for row in results["rows"]:
        for b in backends:
            cpu = row["backends"][b]["cpu"]
            cells = [row["model"], row["photos"], b, f"{row['ideal_cpu_ms_per_image']:.2f}"]
            cells += [f"{cpu.get(g, 0.0):.2f}" for g in groups] + [f"{sum(cpu.values()):.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Partial batch handling (1 process x 1 thread, ms per run)", ""]
    lines += ["| model | rows | cold exact shape | warm exact shape | padded to 8 |"]
    lines += ["|---|---|---|---|---|"]
    for model, table in results["batch_policy"].items():
        for n, t in table.items():
            lines.append(
                f"| {model} | {n} | {t['cold_first_run_ms']} | {t['warm_exact_ms']} | "
                f"{t['padded_to_full_ms']} |"
            )
    (out_dir / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
