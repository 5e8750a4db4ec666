"""``smner data``: inspect data files and fetch the benchmarks."""

from __future__ import annotations

import argparse
import json

from smner.commands import (
    add_alias_option,
    add_input_limit_option,
    parse_aliases,
    positive_float,
    positive_int,
)
from smner.data.download import CHECKSUMS, DEFAULT_BASE_URL, download_benchmark
from smner.data.mnermi import read_corpus
from smner.data.stats import box_stats, corpus_stats, format_stats


def register(verbs: argparse._SubParsersAction) -> None:
    data = verbs.add_parser(
        "data",
        help="inspect data files, download the benchmarks",
        description="Inspect data files in the benchmark format and download the benchmarks.",
    )
    sub = data.add_subparsers(dest="data_verb", metavar="ACTION", required=True)

    stats = sub.add_parser(
        "stats",
        help="counts of posts, tokens and entities per file",
        description="Posts, tokens and entities (counted as seqeval counts them, including "
        "entities that begin with I-), entity lengths, entities longer than the span limit, "
        "posts with an image id and the longest post, for each FILE.",
    )
    stats.add_argument("files", nargs="+", metavar="FILE", help="data files to describe")
    stats.add_argument(
        "--max-span-width",
        type=positive_int,
        default=6,
        metavar="N",
        help="report entities longer than N tokens (default: 6, the model default)",
    )
    stats.add_argument(
        "--json",
        action="store_true",
        help="print one JSON list, one object a file (a list even for one file)",
    )
    stats.add_argument(
        "--boxes",
        metavar="DIR",
        help="folder of <image id>.xml VOC files: also count groundable entities (those with "
        "a box) and boxes per entity",
    )
    add_alias_option(stats)
    add_input_limit_option(stats)
    stats.set_defaults(handler=run_stats)

    download = sub.add_parser(
        "download",
        help="fetch the Twitter-2015/2017 text files (needs internet access)",
        description="Fetch the train/valid/test text files of a benchmark from its public "
        "release (jefferyYu/UMT), verify each against a SHA-256 kept in smner, and write them "
        "into DEST atomically. Nothing is written unless every file verifies. Images are not "
        "fetched: the command prints where to obtain them.",
    )
    download.add_argument("dataset", choices=sorted(CHECKSUMS), help="which benchmark")
    download.add_argument("--dest", required=True, metavar="DIR", help="folder to write into")
    download.add_argument(
        "--base-url", default=DEFAULT_BASE_URL, help="mirror to fetch from (default: %(default)s)"
    )
    download.add_argument(
        "--timeout", type=positive_float, default=60.0, help="seconds per request"
    )
    download.set_defaults(handler=run_download)


def run_stats(args: argparse.Namespace) -> int:
    aliases = parse_aliases(args.label_alias)
    all_stats = []
    for path in args.files:
        corpus = read_corpus(path, aliases, args.max_input_mb * 2**20)
        stats = corpus_stats(corpus, args.max_span_width)
        if args.boxes:
            stats["boxes"] = box_stats(corpus, args.boxes)
        all_stats.append(stats)
    if args.json:
        print(json.dumps(all_stats, indent=2))
    else:
        print("\n\n".join(format_stats(s) for s in all_stats))
    return 0


def run_download(args: argparse.Namespace) -> int:
    result = download_benchmark(args.dataset, args.dest, args.base_url, args.timeout)
    for path in result.files:
        print(f"wrote {path} (SHA-256 verified)")
    print(result.instructions)
    return 0
