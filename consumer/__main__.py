"""Command line: `python -m consumer [run|generate|submit|cancel|stack|schemas] ...`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from pathlib import Path

from consumer.generation.engine.catalog import TINY_MODEL_ID
from consumer.ops import startup_gc
from consumer.ops.logs import configure_logging
from consumer.settings import Settings, load_settings
from schemas import GenerationResult

NOISE_WARNING = "note: tiny-sdxl has random weights, so its images are noise (tests and demos only)"


def _warn_if_noise(result: GenerationResult) -> None:
    """By the model, not by `audit.note`: a real model's result has a note too when it is
    answered from the store, and its images are not noise."""
    if result.audit is not None and result.audit.model == TINY_MODEL_ID:
        print(NOISE_WARNING, file=sys.stderr)


def _add_request_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt")
    parser.add_argument("--negative-prompt", default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--width", type=int, default=None, help="default 512 (or the input's)")
    parser.add_argument("--height", type=int, default=None, help="default 512 (or the input's)")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--cfg", type=float, default=0.0)
    parser.add_argument("--num-images", type=int, default=1)
    parser.add_argument("--model", default=None, help="default: DEFAULT_MODEL")
    parser.add_argument("--request-id", default=None)
    parser.add_argument(
        "--format", choices=["png", "jpeg", "webp"], default=None, help="default: png"
    )
    parser.add_argument("--quality", type=int, default=None, help="jpeg/webp: 1-100 (90)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m consumer", description=__doc__)
    parser.add_argument("--env-file", default=".env", help="dotenv file to load (default .env)")
    commands = parser.add_subparsers(dest="command")

    run = commands.add_parser("run", help="run the worker and its sidecar (the default)")
    run.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS")

    generate = commands.add_parser("generate", help="generate once, without Kafka")
    _add_request_args(generate)
    generate.add_argument(
        "--out", type=Path, default=None, help="write the image here (x.webp implies webp)"
    )

    submit = commands.add_parser("submit", help="send a request and wait for its result")
    _add_request_args(submit)
    submit.add_argument("--wait", type=float, default=300.0, metavar="SECONDS")
    submit.add_argument(
        "--save", type=Path, default=None, help="download the image here (x.webp implies webp)"
    )
    submit.add_argument(
        "--progress", action="store_true", help="show progress events (PROGRESS_TOPIC)"
    )
    submit.add_argument(
        "--priority",
        action="store_true",
        help="send to PRIORITY_TOPIC: starts before every regular request waiting",
    )
    submit.add_argument(
        "--init-image",
        type=Path,
        default=None,
        metavar="FILE",
        help="image-to-image (1.2): upload FILE under INPUT_PREFIX and start from it",
    )
    submit.add_argument("--strength", type=float, default=None, help="with --init-image (0.5)")
    submit.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="NAME:SCALE",
        help="a LoRA adapter of ALLOWED_LORAS (1.2); repeat for more",
    )

    cancel = commands.add_parser("cancel", help="ask the workers to cancel a request")
    cancel.add_argument("request_id")

    stack = commands.add_parser("stack", help="embedded Tansu + SeaweedFS on 127.0.0.1")
    stack.add_argument("action", choices=["up", "down"])
    stack.add_argument("--partitions", type=int, default=4)

    schemas = commands.add_parser(
        "schemas", help="write the JSON Schemas of every event and the AsyncAPI document"
    )
    schemas.add_argument("out_dir", type=Path, nargs="?", default=Path("schemas/json"))
    return parser


def _request(
    args: argparse.Namespace, unique: bool = False, image_format: str | None = None
) -> dict[str, object]:
    """`unique`: a fresh id even for a repeated prompt (a Kafka submission is a new request)."""
    from consumer.client.oneshot import request_from_args

    request_id = args.request_id
    if request_id is None and unique:
        request_id = f"cli-{uuid.uuid4().hex[:16]}"
    return request_from_args(
        args.prompt,
        seed=args.seed,
        width=args.width or 512,
        height=args.height or 512,
        steps=args.steps,
        cfg=args.cfg,
        num_images=args.num_images,
        model=args.model,
        negative_prompt=args.negative_prompt,
        request_id=request_id,
        image_format=image_format or args.format,
        quality=args.quality,
    )


def _generate(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.client.oneshot import InvalidRequestError, format_for_out, generate_once

    if args.model:  # a local one-shot run may use any model its user names
        settings = settings.model_copy(
            update={"default_model": args.model, "allowed_models": [args.model]}
        )
    try:
        request = _request(args, image_format=format_for_out(args.out, args.format))
        result = generate_once(settings, request, args.out)
    except InvalidRequestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.model_dump_json(indent=2))
    for image in result.images:
        print(f"image {image.image_id}: seed {image.seed} -> {image.url}", file=sys.stderr)
    _warn_if_noise(result)
    return 0 if result.status == "completed" else 1


def _submit(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.client.oneshot import InvalidRequestError, format_for_out
    from consumer.client.submit import download, run_submit
    from storage import StorageError

    try:
        request = _request(args, unique=True, image_format=format_for_out(args.save, args.format))
        _add_inputs(settings, args, request)
    except (InvalidRequestError, ValueError, OSError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.priority and not settings.priority_topic:
        print("error: --priority: PRIORITY_TOPIC is empty (no priority lane)", file=sys.stderr)
        return 2
    result = run_submit(settings, request, args.wait, args.progress, args.priority)
    if result is None:
        print(f"no result within {args.wait:.0f}s: is a worker running?", file=sys.stderr)
        return 2
    print(result.model_dump_json(indent=2))
    saved = True
    for index, image in enumerate(result.images):
        print(f"image {image.image_id} (seed {image.seed}): {image.url}", file=sys.stderr)
        if args.save is not None:
            target = args.save if index == 0 else args.save.with_stem(f"{args.save.stem}-{index}")
            try:
                print(f"saved to {download(image.url, target)}", file=sys.stderr)
            except (ValueError, OSError) as exc:  # DownloadRefused; a failed fetch or write
                print(f"error: image {image.image_id}: {exc}", file=sys.stderr)
                saved = False
    _warn_if_noise(result)
    if not saved:
        return 2
    return 0 if result.status == "completed" else 1


def _add_inputs(settings: Settings, args: argparse.Namespace, request: dict[str, object]) -> None:
    """--init-image (uploaded now; its size unless --width/--height), --strength, --lora."""
    from consumer.client.inputs import lora_params, upload_init_image
    from storage import build_store

    params = request["params"]
    assert isinstance(params, dict)
    if args.init_image is not None:
        data = args.init_image.read_bytes()
        params["init_image"] = upload_init_image(build_store(settings), settings.input_prefix, data)
        for side in ("width", "height"):
            if getattr(args, side) is None:
                params.pop(side, None)
    if args.strength is not None:
        params["strength"] = args.strength
    if args.lora:
        params["loras"] = lora_params(args.lora)


def _cancel(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.client.submit import run_cancel

    try:
        sent = run_cancel(settings, args.request_id)
    except ValueError as exc:  # not a valid request_id
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not sent:
        print("no broker answered: is one running?", file=sys.stderr)
        return 2
    print(f"cancel for {args.request_id} sent to {settings.control_topic}", file=sys.stderr)
    return 0


def _stack(settings: Settings, args: argparse.Namespace) -> int:
    from consumer.devtools.stack import stack_down, stack_up

    if args.action == "up":
        path = stack_up(settings, args.partitions)
        print(f"embedded stack running; its settings are in {path}")
    else:
        stopped = stack_down(settings)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.command or "run") == "run":
        startup_gc.pause()  # until its engine is built: see consumer/ops/startup_gc.py
    configure_logging()  # already now, so a settings warning or error is a JSON line as well
    settings = load_settings(args.env_file)
    configure_logging(settings.log_level)
    command = args.command or "run"
    if command == "run":
        from consumer.app import exit_process, serve

        idle = getattr(args, "exit_when_idle", None)
        exit_process(asyncio.run(serve(settings, exit_when_idle=idle)))
    if command == "generate":
        return _generate(settings, args)
    if command == "submit":
        return _submit(settings, args)
    if command == "cancel":
        return _cancel(settings, args)
    if command == "stack":
        return _stack(settings, args)
    from schemas.__main__ import write_schemas

    for path in write_schemas(args.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
