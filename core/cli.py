"""The ``ovquant`` command line.

    ovquant plugins                       list every registered algorithm, estimator, aggregator, target
    ovquant quantize -c config.json       POT-style config file
    ovquant quantize -m model.xml --data PATH [--preset mixed] [--subset-size 300] [--target CPU] -o OUTDIR
    ovquant inspect model.xml             list the quantizers of an IR
    ovquant demo                          quantize the example model shipped in the package

Bad input is reported as one line on stderr with exit code 2; Ctrl-C exits with 130.
"""
import argparse
import os
import sys
import warnings

from .errors import OVQuantError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _cmd_plugins(args) -> int:
    from .registry import KINDS, get_registry

    reg = get_registry()
    titles = {"algorithms": "Algorithms", "estimators": "Range estimators", "aggregators": "Aggregators",
              "hw_targets": "Hardware targets"}
    for kind in ("algorithms", "estimators", "aggregators", "hw_targets"):
        print(f"{titles[kind]}:")
        entries = sorted(reg.entries[kind].values(), key=lambda e: e.name.lower())
        seen = set()
        for e in entries:
            if kind == "hw_targets":
                if id(e.obj) in seen:
                    continue
                seen.add(id(e.obj))
                aliases = f" (aliases: {', '.join(e.obj.aliases)})" if e.obj.aliases else ""
                print(f"  {e.obj.name:<28} {e.package:<32} {e.plugin}{aliases}")
            else:
                print(f"  {e.name:<28} {e.package:<32} {e.plugin}")
        if not entries:
            print("  (none)")
    assert set(KINDS) == set(titles)
    return 0


def _cmd_quantize(args) -> int:
    from . import api

    if args.config and (args.model or args.preset or args.data):
        raise OVQuantError("-c/--config cannot be combined with -m/--model, --data or --preset (as in POT)")
    if args.name:   # before quantizing: the name is checked again where the files are written
        from .config import output_name_problem

        problem = output_name_problem(args.name)
        if problem:
            raise OVQuantError(f"-n/--name: {problem}, got {args.name!r}")
    if args.config:
        result = api.quantize_from_config(args.config, output_dir=args.output_dir, use_cache=not args.no_cache,
                                          strict=args.strict, progress=not args.no_progress)
    else:
        if not args.model:
            raise OVQuantError("give -c/--config, or -m/--model with --data")
        if not args.data:
            raise OVQuantError("--data is required with -m/--model (a folder of images, an .npy or an .npz)")
        result = api.quantize_from_args(model=args.model, weights=args.weights, data=args.data,
                                        preset=args.preset or "performance", subset_size=args.subset_size,
                                        target_device=args.target, model_type=args.model_type,
                                        output_dir=args.output_dir or "results", name=args.name,
                                        use_cache=not args.no_cache, strict=args.strict,
                                        progress=not args.no_progress)
    print(f"saved {result['xml']}")
    return 0


def _cmd_inspect(args) -> int:
    from .inspect import describe_quantizers

    for line in describe_quantizers(args.model):
        print(line)
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(output_dir=args.output_dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ovquant", description="Post-training INT8 quantization for OpenVINO models.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("plugins", help="list registered algorithms, estimators, aggregators and hardware targets")

    q = sub.add_parser("quantize", help="quantize a model (POT config file, or command-line options)")
    q.add_argument("-c", "--config", help="POT-style JSON config (comments allowed)")
    q.add_argument("-m", "--model", help="model .xml (OpenVINO IR) or .onnx")
    q.add_argument("-w", "--weights", help="model .bin (default: next to the .xml)")
    q.add_argument("--data", help="calibration data: a folder of images, an .npy or an .npz file")
    q.add_argument("--preset", choices=["performance", "mixed", "accuracy"], help="default: performance")
    q.add_argument("--subset-size", type=int, default=300, help="stat_subset_size (default: 300)")
    q.add_argument("--target", "--target-device", dest="target", default="ANY", help="hardware target (default: ANY)")
    q.add_argument("--model-type", choices=["None", "Transformer", "transformer"], default=None)
    q.add_argument("-n", "--name", help="output model name (default: the input's)")
    q.add_argument("-o", "--output-dir", help="output folder (default: ./results)")
    q.add_argument("--strict", action="store_true", help="ignored entries that match nothing are errors")
    q.add_argument("--no-cache", action="store_true", help="do not read or write the statistics cache")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")

    i = sub.add_parser("inspect", help="list the quantizers (FakeQuantize ops) of an IR")
    i.add_argument("model")

    d = sub.add_parser("demo", help="quantize the example CNN shipped in the package and compare it to FP32")
    d.add_argument("-o", "--output-dir", default=None, help="where to write the INT8 model (default: a temp folder)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"plugins": _cmd_plugins, "quantize": _cmd_quantize, "inspect": _cmd_inspect, "demo": _cmd_demo}[args.command]
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"ovquant: warning: {msg}\n"
    try:
        return handler(args)
    except OVQuantError as exc:
        print(f"ovquant: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("ovquant: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
