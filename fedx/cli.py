"""The ``fedx`` command.

``fedx run CONFIG [--set key=value ...] [--out DIR] [--resume | --force]``
    A federated run in simulation; writes DIR/result.json, CSV tables and plots.
``fedx stats CONFIG [--out DIR]``
    Federated statistics from the config's ``stats:`` section; writes DIR/stats.json.
``fedx keygen --preset P --out DIR``
    HE keys: DIR/secret.fxk for the institutions (mode 0600), DIR/public.fxk for the server.
``fedx audit verify LEDGER`` / ``fedx audit summary LEDGER``
    Check an institution's audit ledger, or say what left it and when.

Bad input exits with status 2 and a one-line message, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import FedxError


def _overrides(pairs: Sequence[str] | None) -> dict[str, Any]:
    from .config import parse_override

    return dict(parse_override(p) for p in pairs or [])


def cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config

    cfg = load_config(args.config, overrides=_overrides(args.set))
    from .runner import run

    out = args.out
    if args.resume and out is None:
        raise FedxError("--resume needs --out DIR: the folder of the run to continue")
    run(cfg, out, progress=not args.quiet, resume=args.resume, force=args.force, verbose=args.verbose)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from .config import load_config

    cfg = load_config(args.config, overrides=_overrides(args.set))
    from .runner import stats

    stats(cfg, args.out, progress=not args.quiet, force=args.force, verbose=args.verbose)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from . import he

    overrides = {k: v for k, v in (("bits", args.bits), ("clip", args.clip)) if v is not None}
    keys = he.keygen(args.preset, **overrides)
    paths = keys.save(args.out)
    print(f"fingerprint {keys.fingerprint}")
    for p in paths if isinstance(paths, (list, tuple)) else [paths]:
        print(f"wrote {p}")
    print("Give secret.fxk to each institution out of band; give public.fxk to the server.")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .privacy.audit import summary, verify

    if args.action == "verify":
        report = verify(args.ledger)
        print(f"{report.path}: chain intact, {report.entries} entries, {report.bytes} bytes sent")
        return 0
    print(json.dumps(summary(args.ledger), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fedx`` command."""
    p = argparse.ArgumentParser(prog="fedx", description="Privacy-preserving federated learning and analytics.")
    p.add_argument("--version", action="version", version=f"fedx {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="a federated run in simulation (writes result.json)")
    r.add_argument("config", type=Path, help="the YAML config")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. federation.rounds=5")
    r.add_argument("--out", type=Path, help="the run folder (default runs/<name>-<time>)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    r.add_argument("--force", action="store_true", help="replace what --out holds")
    r.add_argument("--quiet", action="store_true", help="no progress bar or final table")
    r.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("stats", help="federated statistics from the config's stats: section")
    s.add_argument("config", type=Path)
    s.add_argument("--set", action="append", metavar="KEY=VALUE")
    s.add_argument("--out", type=Path, help="the output folder (default runs/<name>-<time>)")
    s.add_argument("--force", action="store_true", help="replace what --out holds")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--verbose", action="store_true")
    s.set_defaults(func=cmd_stats)

    k = sub.add_parser("keygen", help="create HE keys (secret for institutions, public for the server)")
    k.add_argument("--preset", default="bfv-compact", help="bfv-compact (default) or ckks")
    k.add_argument("--out", type=Path, required=True, help="folder for secret.fxk and public.fxk")
    k.add_argument("--bits", type=int, help="quantization bits (bfv-compact)")
    k.add_argument("--clip", type=float, help="clip range (bfv-compact)")
    k.set_defaults(func=cmd_keygen)

    a = sub.add_parser("audit", help="check an audit ledger, or summarize what left an institution")
    a.add_argument("action", choices=["verify", "summary"])
    a.add_argument("ledger", type=Path)
    a.set_defaults(func=cmd_audit)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedx`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except FedxError as exc:
        print(f"fedx: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedx: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
