"""The benchmark's table and JSON output.

Owns: turning result rows (one per scenario x server) into a plain-text table
with goniec's ratios against Postfix and the aiosmtpd baselines and the target
check for each row, and the JSON file. Does no measuring and no I/O besides
writing the JSON file it is asked to write.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BASELINES = ("postfix", "aiosmtpd", "aiosmtpd-fsync")


def result_text(row: dict[str, Any]) -> str:
    if row["status"] != "ran":
        return f"{row['status']}: {row.get('reason', '')}"[:70]
    kind = row["kind"]
    if kind == "load":
        text = f"{row['msgs_per_s']:.0f} msg/s"
        if row.get("server_count") is None:
            text += " (count not verified server-side)"
        if len(row.get("rounds", ())) > 1:
            text += f" (n={len(row['rounds'])}, spread {row['spread_pct']}%)"
        if not row["ok"]:
            got = row["server_count"] if row["server_count"] is not None else row["client_ok"]
            text += f"  FAILED {got}/{row['count']} {'; '.join(row['errors'])[:60]}"
        return text
    if kind == "big":
        if not row["ok"]:
            return f"FAILED {row.get('error', '')}"[:70]
        return f"{row['seconds']:.1f}s ({row['mb_per_s']:.0f} MB/s)"
    ok = "ok" if row["probe_ok"] else f"FAILED {row.get('probe_error', '')}"[:40]
    return f"probe {ok} {row['probe_ms']:.0f}ms, idle {row['idle_open']}/{row['idle_wanted']} open, {row['idle_alive_after']} alive"


def ratios(rows: list[dict[str, Any]]) -> None:
    """Add vs_<baseline> ratios (score / baseline score) to every goniec row."""
    by_key = {(r["scenario"], r["server"]): r for r in rows}
    for row in rows:
        if not row["server"].startswith("goniec") or row.get("score") is None:
            continue
        for base in BASELINES:
            other = by_key.get((row["scenario"], base))
            if other and other.get("score"):
                row[f"vs_{base}"] = round(row["score"] / other["score"], 2)


def verdict(row: dict[str, Any]) -> str:
    """PASS/FAIL against the scenario's target, for goniec rows that ran."""
    target = row.get("target", "")
    if not target or not row["server"].startswith("goniec") or row["status"] != "ran":
        return ""
    if not row["ok"]:
        return "FAIL"
    if target.startswith(">="):
        ratio = row.get("vs_postfix")
        if ratio is None:
            return "n/a"
        return "PASS" if ratio >= float(target[2:].split("x")[0]) else "FAIL"
    if row["kind"] == "big":
        return "PASS" if row["peak_rss_mb"] < 100 else "FAIL"
    return "PASS"


def table(rows: list[dict[str, Any]]) -> str:
    ratios(rows)
    head = ["scenario", "server", "result", "RSS MB", "PSS MB", "/postfix", "/aiosmtpd",
            "/aio-fsync", "target", ""]  # fmt: skip
    lines = [head]
    for r in rows:
        ran = r["status"] == "ran"
        lines.append([
            r["scenario"],
            r["server"],
            result_text(r),
            f"{r['peak_rss_mb']:.0f}" if ran else "",
            f"{r['peak_pss_mb']:.0f}" if ran else "",
            *(f"{r[f'vs_{b}']:.2f}x" if f"vs_{b}" in r else "" for b in BASELINES),
            r.get("target", "") if r["server"].startswith("goniec") else "",
            verdict(r),
        ])  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths).rstrip())
    return "\n".join(out)


def notes(rows: list[dict[str, Any]]) -> str:
    """Full reasons for skipped servers and failed rows, which the table cuts short."""
    out = []
    seen = set()
    for r in rows:
        if r["status"] == "skipped" and r["server"] not in seen:
            seen.add(r["server"])
            out.append(f"- {r['server']} skipped: {r['reason']}")
        elif r["status"] == "ran" and not r["ok"]:
            why = "; ".join(r.get("errors", ())) or r.get("error") or r.get("probe_error") or ""
            out.append(f"- {r['scenario']} {r['server']} FAILED: {why}")
            if r.get("log_tail"):
                out.extend("    " + line for line in r["log_tail"].splitlines()[-4:])
    return "\n".join(out)


def write_json(path: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    ratios(rows)
    for r in rows:
        r["verdict"] = verdict(r)
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
