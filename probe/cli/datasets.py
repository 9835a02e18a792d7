"""``probe datasets``: every dataset name, whether it loads here, and how to get the ones that do not."""

from __future__ import annotations

import argparse

HELP = "list the datasets (--dataset NAME): which are here, where they come from, and how to get the others"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``probe datasets``'s arguments to ``parser``."""
    parser.add_argument(
        "--root", default=None,
        help="folder holding real datasets, as zoo.load_dataset(root=...) takes it (default: $NEUROPROBE_DATA, "
        "or ~/.cache/neuroprobe/datasets)",
    )
    parser.add_argument("--available", action="store_true", help="only the datasets that load here")


def run(args: argparse.Namespace) -> int:
    import zoo

    # zoo.dataset_status knows where each dataset's files or package are; it reads and downloads nothing.
    statuses = [status for status in zoo.dataset_status(args.root) if status.available or not args.available]
    rows = []
    for status in statuses:
        rows.append((status.name, "here" if status.available else "not here", status.source))
        if status.install:
            rows.append(("", "", f"to get it: {status.install}"))
    widths = [max(len(row[i]) for row in [("name", "status", ""), *rows]) for i in range(2)]
    print("datasets (--dataset NAME); 'here' ones load without the internet:")
    for row in [("name", "status", "source"), *rows]:
        print(f"  {row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2]}".rstrip())
    missing = sum(not status.available for status in statuses)
    print(f"{len(statuses) - missing} of {len(statuses)} here; dataset options: --dataset-option KEY=VALUE "
          "(e.g. patch_size=12 for natural-patches, image_size=64 for imagefolder:PATH)")
    return 0
