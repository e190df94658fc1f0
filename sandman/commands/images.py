"""`sandman images`, `sandman image busybox|import|remove`: the image store.

Results go to stdout, progress to stderr. No unit is loaded, so pydantic is never imported here.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

from sandman import output
from sandman.errors import UsageError
from sandman.images import store
from sandman.paths import Paths


def run(args: argparse.Namespace) -> int:
    action = {
        "list": run_list,
        "busybox": run_busybox,
        "import": run_import,
        "bootstrap": run_bootstrap,
        "remove": run_remove,
    }[args.action]
    return action(args)


def run_list(args: argparse.Namespace) -> int:
    image_dir = _image_dir(args)
    found = store.list_images(image_dir)
    if args.json:
        output.print_json({"images": [image.to_json() for image in found]})
    elif not found:
        sys.stdout.write(f"No images in {image_dir}; `sandman image busybox` builds one.\n")
    else:
        sys.stdout.write(_table(found))
    return 0


def run_busybox(args: argparse.Namespace) -> int:
    _check_name(args.name)
    image = store.build_busybox(_image_dir(args), args.busybox, name=args.name, progress=_progress)
    _result(args, image, "built")
    return 0


def run_import(args: argparse.Namespace) -> int:
    _check_name(args.name)
    if not os.path.exists(args.source):
        raise UsageError(f"{args.source}: no such tarball or directory")
    from sandman.images.tarball import Bounds

    bounds = Bounds(max_size=args.max_size, max_files=args.max_files)
    image = store.import_image(
        _image_dir(args), args.name, args.source, progress=_progress, bounds=bounds, ref=args.ref
    )
    _result(args, image, "imported")
    return 0


def run_bootstrap(args: argparse.Namespace) -> int:
    _check_name(args.name)
    include = tuple(p for item in args.include for p in item.split(",") if p)
    image = store.bootstrap_image(
        _image_dir(args),
        args.name,
        suite=args.suite,
        mirror=args.mirror,
        include=include,
        progress=_progress,
    )
    _result(args, image, "bootstrapped")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    _check_name(args.name)
    image_dir = _image_dir(args)
    if not args.force:
        _refuse_if_used(args, image_dir)
    store.remove_image(image_dir, args.name)
    if args.json:
        path = os.path.join(image_dir, args.name)
        output.print_json({"removed": {"name": args.name, "path": path}})
    else:
        sys.stdout.write(f"{args.name}: removed from {image_dir}\n")
    return 0


def _refuse_if_used(args: argparse.Namespace, image_dir: str) -> None:
    """An applied sandbox runs on the image's tree (its lower layer, or the tree itself in bind
    mode): removing it would empty that sandbox's /bin under it."""
    from sandman.errors import ImageError
    from sandman.observe.records import read_records

    path = os.path.join(image_dir, args.name)
    state_dir = Paths.resolve(args.state_dir, args.image_dir, args.log_dir).state_dir
    users = sorted(
        f"sandbox/{record.name}"
        for record in read_records(state_dir)
        if record.kind == "sandbox" and record.runtime.rootfs == path
    )
    if users:
        raise ImageError(
            args.name,
            path,
            f"in use by {', '.join(users)} (applied in `{state_dir}`); destroy them first, "
            "or remove it anyway with --force",
        )


def _image_dir(args: argparse.Namespace) -> str:
    return Paths.resolve(args.state_dir, args.image_dir, args.log_dir).image_dir


def _check_name(name: str) -> None:
    # A bad name is a bad argument (exit 2), not a failed build.
    problem = store.name_problem(name)
    if problem:
        raise UsageError(problem)


def _progress(message: str) -> None:
    sys.stderr.write(f"sandman: {message}\n")
    sys.stderr.flush()


def _result(args: argparse.Namespace, image: store.ImageInfo, verb: str) -> None:
    if args.json:
        output.print_json({"image": image.to_json()})
        return
    files = output.plural(image.files, "file")
    sys.stdout.write(f"{image.name}: {verb} {image.path} ({output.size(image.size)}, {files})\n")


def _table(found: list[store.ImageInfo]) -> str:
    rows = [("NAME", "SIZE", "FILES", "CREATED")]
    for image in found:
        created = datetime.datetime.fromtimestamp(image.created).strftime("%Y-%m-%d %H:%M")
        rows.append((image.name, output.size(image.size), str(image.files), created))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        f"{name:<{widths[0]}}  {size:>{widths[1]}}  {files:>{widths[2]}}  {created}"
        for name, size, files, created in rows
    ]
    return "\n".join(lines) + "\n"
