"""The ``fedx`` command.

``fedx run CONFIG [--set key=value ...] [--out DIR] [--resume | --force]``
    A federated run in simulation; writes DIR/result.json, CSV tables and plots.
``fedx stats CONFIG [--out DIR]``
    Federated statistics from the config's ``stats:`` section; writes DIR/stats.json.
``fedx keygen --preset P --out DIR``
    HE keys: DIR/secret.fxk for the institutions (mode 0600), DIR/public.fxk for the server.
``fedx certs --out DIR`` / ``fedx node-keys --name NAME --out DIR``
    TLS certificates for the server; a SuperNode key pair for an institution.
``fedx server CONFIG`` / ``fedx node NODE.yaml``
    The two sides of a real deployment (docs/deploy.md).
``fedx audit verify LEDGER [--receipts RECEIPTS] [--chain-only]`` / ``fedx audit summary LEDGER``
    Check an institution's audit ledger against the server's receipts, or say what left it and when.

Every command that reads a config takes it as its first argument; ``--config FILE`` is an alias.
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

from ._version import __version__
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

    overrides = {k: v for k, v in (("bits", args.bits), ("clip", args.clip), ("max_clients", args.max_clients))
                 if v is not None}
    keys = he.keygen(args.preset, **overrides)
    paths = keys.save(args.out)
    print(f"fingerprint {keys.fingerprint_text} ({keys.preset.name})")
    for p in paths if isinstance(paths, (list, tuple)) else [paths]:
        print(f"wrote {p}")
    print("Give secret.fxk to each institution through your own secure channel, and public.fxk to the server "
          "(never secret.fxk). `fedx node` and `fedx server` print the fingerprint of the keys they load: "
          "compare it with this one out of band (docs/deploy.md).")
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    from .flower.deploy import make_ca_and_server_cert

    files = make_ca_and_server_cert(args.out, hosts=args.host or ("127.0.0.1", "localhost"), days=args.days,
                                    overwrite=args.force)
    print(f"wrote {files.ca_cert} (give it to every institution), {files.server_cert} and {files.server_key} "
          f"(the server's), {files.ca_key} (keep it offline)")
    return 0


def cmd_node_keys(args: argparse.Namespace) -> int:
    from .flower.deploy import make_node_keypair

    private, public = make_node_keypair(args.out, args.name, overwrite=args.force)
    print(f"wrote {private} (keep it at the institution, mode 0600) and {public} (send it to the server operator)")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from .config import load_config

    cfg = load_config(args.config, overrides=_overrides(args.set))
    if args.insecure:
        from .config import config_from_dict

        doc = cfg.to_dict()
        doc["deployment"] = {**(doc.get("deployment") or {}), "insecure": True}
        cfg = config_from_dict(doc, source=cfg.source, base_dir=cfg.base_dir)
    from .flower.operate import serve

    serve(cfg, args.config)
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    from .config import load_node_config

    overrides = _overrides(args.set)
    if args.insecure:
        overrides["superlink.insecure"] = True
    node = load_node_config(args.config, overrides=overrides)
    from .flower.operate import run_node

    return run_node(node, args.config, once=args.once, retry_for=args.retry_for, keep_running=args.keep_running)


def cmd_audit(args: argparse.Namespace) -> int:
    from .privacy.audit import entries, summary, verify, verify_receipts

    if args.action == "summary":
        print(json.dumps(summary(args.ledger), indent=2))
        return 0
    report = verify(args.ledger)
    intact = f"{report.path}: chain intact, {report.entries} entries, {report.bytes} bytes sent"
    if report.torn is not None:
        print(f"{report.path}: {report.torn.describe()}")
    lines = entries(args.ledger)
    if lines and all("institution" in e["checks"] for e in lines):
        print(f"{intact} (the server's receipts: check each institution's ledger against them)")
        return 0
    if args.chain_only:
        print(f"{intact} (chain only: not checked against the server's receipts, so removed last entries or a "
              f"recomputed chain would not show)")
        return 0
    anchored = verify_receipts(args.ledger, args.receipts or _default_receipts(args.ledger), args.institution)
    tail = ""
    if anchored.unreceipted:
        tail = (f"; {len(anchored.unreceipted)} not receipted (entries "
                f"{', '.join(map(str, anchored.unreceipted[:10]))}{', ...' if len(anchored.unreceipted) > 10 else ''}"
                f": replies the server never received, or of earlier runs)")
    print(f"{intact}; matches the server's receipts {anchored.receipts} for {anchored.institution}: "
          f"{anchored.receipted} entries receipted{tail}")
    return 0


def _default_receipts(ledger: Path) -> Path:
    """Where a simulation keeps the server's receipts: RUN/receipts.jsonl for RUN/institutions/NAME/ledger.jsonl."""
    for path in (ledger, ledger.resolve()):
        if path.parent.parent.name == "institutions":
            return path.parent.parent.parent / "receipts.jsonl"
    return ledger.parent / "receipts.jsonl"


SET_HELP = "override a config key, e.g. federation.rounds=5 (repeat for more; the value is read as YAML)"


def _command(sub: Any, name: str, text: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand; its help line is also the description that its own --help shows, unless one is given."""
    return sub.add_parser(name, help=text, description=description or f"{text[:1].upper()}{text[1:]}.")


def _config_argument(parser: argparse.ArgumentParser, text: str) -> None:
    """The config as the first argument, with ``--config`` as an alias (see :func:`_resolve_config`)."""
    parser.add_argument("config", type=Path, nargs="?", metavar="CONFIG", help=text)
    parser.add_argument("--config", type=Path, dest="config_option", metavar="CONFIG",
                        help="the same file, as an option (an alias of the first argument)")
    parser.set_defaults(parser=parser)


def _resolve_config(args: argparse.Namespace) -> None:
    """``args.config`` from the first argument or ``--config``: one of them, or both naming the same file."""
    parser = getattr(args, "parser", None)
    if parser is None:
        return
    given, option = args.config, args.config_option
    if given is not None and option is not None and given.resolve() != option.resolve():
        parser.error(f"the config is given twice, as {given} and as --config {option}: give it once")
    args.config = given if given is not None else option
    if args.config is None:
        parser.error(f"the config is required: {parser.prog} CONFIG (or --config CONFIG)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fedx`` command."""
    p = argparse.ArgumentParser(prog="fedx", description="Privacy-preserving federated learning and analytics.")
    p.add_argument("--version", action="version", version=f"fedx {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = _command(sub, "run", "a federated run in simulation (writes result.json)")
    _config_argument(r, "the run's YAML config")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    r.add_argument("--out", type=Path, help="the run folder (default runs/<name>-<time>)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    r.add_argument("--force", action="store_true", help="replace what --out holds")
    r.add_argument("--quiet", action="store_true", help="no progress bar or final table")
    r.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    r.set_defaults(func=cmd_run)

    s = _command(sub, "stats", "federated statistics from the config's stats: section (writes stats.json)")
    _config_argument(s, "the YAML config, with a stats: section")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    s.add_argument("--out", type=Path, help="the output folder (default runs/<name>-<time>)")
    s.add_argument("--force", action="store_true", help="replace what --out holds")
    s.add_argument("--quiet", action="store_true", help="no progress or printed statistics")
    s.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    s.set_defaults(func=cmd_stats)

    k = _command(sub, "keygen", "create HE keys (secret for institutions, public for the server)")
    k.add_argument("--preset", default="bfv-compact", help="bfv-compact (default) or ckks")
    k.add_argument("--out", type=Path, required=True, help="folder for secret.fxk and public.fxk")
    k.add_argument("--bits", type=int, help="quantization bits (bfv-compact)")
    k.add_argument("--clip", type=float, help="clip range (bfv-compact)")
    k.add_argument("--max-clients", type=int, help="most updates one sum holds at full precision (bfv-compact; "
                                                   "default 16): sets the moduli, and so the bytes per parameter")
    k.set_defaults(func=cmd_keygen)

    c = _command(sub, "certs", "create a CA and the server's TLS certificate (cryptography library)")
    c.add_argument("--out", type=Path, required=True, help="folder for ca.crt, ca.key, server.pem, server.key")
    c.add_argument("--host", action="append", help="a name or IP the institutions dial (repeat; default 127.0.0.1, localhost)")
    c.add_argument("--days", type=int, default=365, help="validity in days")
    c.add_argument("--force", action="store_true", help="replace existing files (invalidates the old CA)")
    c.set_defaults(func=cmd_certs)

    nk = _command(sub, "node-keys", "create an institution's SuperNode key pair (for node authentication)")
    nk.add_argument("--name", required=True, help="the institution's name")
    nk.add_argument("--out", type=Path, required=True, help="folder for NAME.key and NAME.pub")
    nk.add_argument("--force", action="store_true", help="replace existing files")
    nk.set_defaults(func=cmd_node_keys)

    sv = _command(sub, "server", "start a SuperLink, register the institutions and run the job")
    _config_argument(sv, "the run's YAML config, with a deployment: section")
    sv.add_argument("--set", action="append", metavar="KEY=VALUE", help=SET_HELP)
    sv.add_argument("--insecure", action="store_true", help="no TLS, no node authentication: localhost demos ONLY")
    sv.set_defaults(func=cmd_server)

    from .flower.operate import DEFAULT_RETRY_FOR

    nd = _command(sub, "node", "run one institution's SuperNode until its run ends")
    _config_argument(nd, "the institution's node file (YAML: name, data, keys, superlink)")
    nd.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a key of the node file, e.g. superlink.address=10.0.0.5:9092 (repeat)")
    nd.add_argument("--insecure", action="store_true", help="no TLS, no node authentication: localhost demos ONLY")
    nd.add_argument("--once", action="store_true",
                    help="start the SuperNode once: no retry when the server refuses its key")
    nd.add_argument("--retry-for", type=float, default=DEFAULT_RETRY_FOR, metavar="SECONDS",
                    help="keep trying to join the server (key not registered yet, server not up yet), and wait "
                         f"for a server that went away, this long (default {DEFAULT_RETRY_FOR:g}; 0: no limit)")
    nd.add_argument("--keep-running", action="store_true",
                    help="stay after the run ends, for further runs (by default the node stops with its run)")
    nd.set_defaults(func=cmd_node)

    a = _command(
        sub, "audit", "check an audit ledger against the server's receipts, or summarize what left an institution",
        description="verify: check the ledger's hash chain, and check it against the server's receipts.jsonl, which "
                    "records the ledger head that came with every reply: removed last entries, or an entry edited and "
                    "the chain recomputed, are reported as the first entry that does not match. The receipts are "
                    "found beside a simulation's ledgers (RUN/receipts.jsonl); in a deployment, get the server's "
                    "receipts.jsonl and pass it with --receipts. summary: what left the institution, and when.")
    a.add_argument("action", choices=["verify", "summary"],
                   help="verify: check the chain and the server's receipts; summary: what left, and when")
    a.add_argument("ledger", type=Path, help="an institution's ledger.jsonl (or the server's receipts.jsonl)")
    a.add_argument("--receipts", type=Path,
                   help="the server's receipts.jsonl (default: RUN/receipts.jsonl for a simulation's "
                        "RUN/institutions/NAME/ledger.jsonl)")
    a.add_argument("--institution", help="the institution's name in the receipts (default: found from the ledger)")
    a.add_argument("--chain-only", action="store_true",
                   help="check the hash chain alone (does not show removed last entries or a recomputed chain)")
    a.set_defaults(func=cmd_audit)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedx`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _resolve_config(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .run_folder import cli_spelling

    try:
        with cli_spelling():
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
