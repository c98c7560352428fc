"""The calibration sources every methods table compares (issue: real evidence)."""
from common import row

SOURCES = [
    row("noise", "noise"),
    row("real", "real"),
    row("real + ACM", "real", acm=1),
    row("psaq (faithful)", "psaq"),
    row("psaq + ACM", "psaq", acm=1),
    row("dfq-vit without ACM", "dfq-vit"),
    row("dfq-vit (E2H + ACM)", "dfq-vit", acm=1),
    row("dfq-vit (E2H + ACM shrunk)", "dfq-vit", acm=1, acm_variant="shrunk"),
    row("mimiq", "mimiq"),
    row("mimiq + distillation", "mimiq", distill=200),
    row("sardfq", "sardfq"),
]
NAMES = [r["name"] for r in SOURCES]


def pick(names: str | None) -> list[dict]:
    if not names:
        return SOURCES
    wanted = [n.strip() for n in names.split(";")]
    unknown = [n for n in wanted if n not in NAMES]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {NAMES}")
    return [r for r in SOURCES if r["name"] in wanted]
