"""metrics.json, the record of a run's measurements, and the report the CLI prints of them.

This module is the only writer of metrics.json: others hand it measurements. Its layout:
top-level keys for scalar measurements (the 2-D distances written after training, the
likelihood keys nll_<kind>_*), and "sample_quality", a list of the records of
quality.evaluate_quality, one per distinct setting (a new record of the same kind, features,
sample count, sampler, steps, seed, weights and guidance replaces the old one).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..rundir import METRICS, atomic_write_text
from ..sampling import passes_note
from .distances import point_rows
from .quality import image_extra_rows, image_rows

# A stored record's "kind" → its header lines and rows, and the rows after precision/recall.
ROWS = {"points": (point_rows, lambda record: []), "images": (image_rows, image_extra_rows)}


def read_metrics(run_dir: Path) -> dict:
    path = Path(run_dir) / METRICS
    return json.loads(path.read_text()) if path.is_file() else {}


def _write(run_dir: Path, content: dict) -> None:
    atomic_write_text(Path(run_dir) / METRICS, json.dumps(content, indent=2))


def write_metrics(run_dir: Path, new: dict) -> dict:
    """Merge the scalar measurements `new` into run_dir/metrics.json (atomically); returns
    the whole record."""
    content = read_metrics(run_dir)
    content.update(new)
    _write(run_dir, content)
    return content


def _identity(record: dict) -> tuple:
    s = record["samples"]
    return (record["kind"], record.get("features", {}).get("sha256"), s["num"], s["sampler"], s["steps"], s["seed"],
            s["weights"], s.get("guidance"), record.get("reference", {}).get("file"), s.get("autoguide"), s.get("autoguide_scale"),
            str(s.get("guidance_interval")))


def write_quality_record(run_dir: Path, record: dict) -> dict:
    """Add `record` to run_dir/metrics.json under "sample_quality" (replacing an earlier
    record of the same settings), atomically; returns the whole file's content."""
    content = read_metrics(run_dir)
    records = [r for r in content.get("sample_quality", []) if _identity(r) != _identity(record)]
    content["sample_quality"] = [*records, record]
    _write(run_dir, content)
    return content


def format_report(record: dict) -> list[str]:
    """The short table the CLI prints: one header line per comparability field, one row per number."""
    s = record["samples"]
    labels = f", labels {s['labels']}, guidance {s['guidance']:g}" if "labels" in s else ""
    passes = s.get("network_passes", s["nfe"])
    guided = passes_note(s) if "autoguide" in s or "guidance_interval" in s else None
    nfe = f"{s['nfe']} network evaluations each" + (f" ({guided})" if guided else
        f" ({passes} network passes: guidance runs the conditional and the unconditional model)" if passes != s["nfe"] else "")
    if "classifier_scale" in s:
        nfe += (f", classifier guidance s = {s['classifier_scale']:g} ({s['classifier_passes']} classifier passes: "
                "a forward and a backward at each evaluation)")
    lines = [f"samples:   {s['num']:,} from {s['sampler']} with {s['steps']} steps = {nfe} "
             f"(T = {s['trained_steps_T']}), seed {s['seed']}, {s['weights']} weights{labels}",
             f"reference: {record['reference']['what']}"]
    kind_rows, extra_rows = ROWS[record["kind"]]
    header, rows = kind_rows(record)
    lines += header
    rows += [("precision", f"{record['precision']:.3f}", f"share of samples inside the real manifold (k = {record['k']})"),
             ("recall", f"{record['recall']:.3f}", f"share of real {record['kind']} inside the sample manifold"),
             *extra_rows(record)]
    width = max(len(v) for _, v, _ in rows)
    lines += [f"  {name:<12} {value:>{width}}   {what}" for name, value, what in rows]
    lines.append(f"note:      {record['note']}")
    return lines
