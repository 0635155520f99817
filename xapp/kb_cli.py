"""``argo-xapp kb list|remove|reset|stats``: the knowledge base's sources, managed from the command line.

Works on the embedded store under the data directory or, with ``ARGO_CHROMA_MODE=http``, on the Chroma
server the xApp uses; a running xApp sees the change within a second either way (see
:mod:`xapp.store.knowledge_base`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from xapp.errors import ArgoError


def add_parser(sub: Any) -> None:
    """Register ``kb`` on the top-level subparsers (called from :mod:`xapp.cli`)."""
    kb = sub.add_parser(
        "kb",
        help="list, remove or reset the knowledge base's sources",
        description="List, remove or reset the knowledge base's sources (the embedded store under the data "
        "directory, or the Chroma server with ARGO_CHROMA_MODE=http). A running xApp sees changes within a second.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  argo-xapp kb list\n"
        "  argo-xapp kb stats --json\n"
        "  argo-xapp kb remove 'oran-sc-docs/*' old-spec.pdf\n"
        "  argo-xapp kb reset --yes          # the built-in notes come back at the next use",
    )
    kb_sub = kb.add_subparsers(dest="kb_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", type=Path, metavar="DIR",
        help="all state lives here (default: $ARGO_DATA_DIR, else ~/.local/share/argo-xapp)",
    )  # fmt: skip
    common.add_argument("--json", action="store_true", help="print JSON (default: a table)")
    kb_sub.add_parser("list", parents=[common], help="sources with their chunks and when they were ingested")
    remove = kb_sub.add_parser("remove", parents=[common], help="remove sources (names, globs or libraries)")
    remove.add_argument(
        "sources", nargs="+", metavar="SOURCE",
        help="a source as `kb list` names it, a glob ('specs/*.pdf') or a library name; one or more",
    )  # fmt: skip
    reset = kb_sub.add_parser("reset", parents=[common], help="drop every chunk (the built-in KB returns on use)")
    reset.add_argument("--yes", action="store_true", help="do not ask (default: ask on a terminal, refuse otherwise)")
    kb_sub.add_parser("stats", parents=[common], help="chunks, sources, libraries and formats")


def _open(args: argparse.Namespace) -> Any:
    from xapp.config import load_settings
    from xapp.store.knowledge_base import KnowledgeBase

    flags = {"data_dir": args.data_dir} if args.data_dir is not None else {}
    return KnowledgeBase.open(load_settings(flags))


def run(args: argparse.Namespace) -> int:
    kb = _open(args)
    command = args.kb_command
    if command == "list":
        infos = kb.sources()
        if args.json:
            print(json.dumps([i.to_dict() for i in infos]))
            return 0
        width = max((len(i.source) for i in infos), default=6)
        print(f"{'SOURCE':<{width}}  {'CHUNKS':>6}  {'INGESTED':<20}  STATUS")
        for info in infos:
            when = info.to_dict()["ingested_at"] or "-"
            print(f"{info.source:<{width}}  {info.chunks:>6}  {when:<20}  {info.status}")
        print(f"{len(infos)} sources, {sum(i.chunks for i in infos)} chunks")
        return 0
    if command == "remove":
        try:
            removed = kb.remove_sources(args.sources)
        except KeyError as exc:
            raise ArgoError(f"no source matches {exc.args[0]!r} (see `argo-xapp kb list`)") from None
        if args.json:
            print(json.dumps(removed))
        else:
            for source, chunks in removed.items():
                print(f"removed {source} ({chunks} chunks)")
            print(f"removed {len(removed)} sources, {sum(removed.values())} chunks; {kb.count()} chunks left")
        return 0
    if command == "reset":
        if not args.yes:
            if not sys.stdin.isatty():
                raise ArgoError("kb reset drops every chunk: pass --yes to confirm")
            answer = input(f"drop all {kb.count()} chunks of collection {kb.collection_name!r}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing removed")
                return 1
        before = kb.count()
        kb.reset()
        print(f"reset collection {kb.collection_name!r}: {before} chunks removed")
        return 0
    stats = kb.stats()
    if args.json:
        print(json.dumps(stats))
        return 0
    print(
        f"collection {stats['collection']!r} ({stats['mode']}, {stats['embedder']}): {stats['chunks']} chunks "
        f"from {stats['sources']} sources, {stats['bytes'] / 2**20:.1f} MiB of documents"
    )
    if stats["incomplete"] or stats["unmanaged"]:
        print(
            f"  {stats['incomplete']} incomplete (re-run the ingestion), {stats['unmanaged']} unmanaged "
            "(chunks without a record, from an older argo-xapp: `kb remove` them or re-ingest)"
        )
    for name, lib in sorted(stats["libraries"].items()):
        print(f"  library {name}: {lib['sources']} sources, {lib['chunks']} chunks")
    print("  formats: " + ", ".join(f"{k} {v}" for k, v in sorted(stats["formats"].items())))
    return 0
