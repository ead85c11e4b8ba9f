#!/usr/bin/env python3
"""Classify one article with a running `topics` server and print its label and scores.

    pip install -r examples/python/requirements.txt
    python examples/python/classify.py --addr 127.0.0.1:50051 --text "Aid trucks reached the camp."
    python examples/python/classify.py --addr 127.0.0.1:50051 --file article.txt

The stubs are generated from the repository's proto/ at every run, into a temporary
directory, so the client can never drift from the API it talks to. On a failed call it
prints the gRPC status and exits with 1.
"""

import argparse
import importlib
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
PROTO_FILE = "topics/v1/topics.proto"


def generate_stubs(out_dir):
    """Compiles the API into out_dir and imports it: (messages module, services module)."""
    # grpc_tools ships the well-known types; include them so that the proto may use them.
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            PROTO_FILE,
        ]
    )
    if status != 0:
        sys.exit(f"error: cannot compile {os.path.join(PROTO_ROOT, PROTO_FILE)} (protoc exit {status})")
    # The generated services module imports the messages as `topics.v1.topics_pb2`.
    sys.path.insert(0, out_dir)
    return importlib.import_module("topics.v1.topics_pb2"), importlib.import_module("topics.v1.topics_pb2_grpc")


def read_text(args):
    if args.text is not None:
        return args.text
    if args.file == "-":
        return sys.stdin.read()
    with open(args.file, encoding="utf-8") as f:
        return f.read()


def main():
    parser = argparse.ArgumentParser(description="Classify a news article with a topics server.")
    parser.add_argument("--addr", default="127.0.0.1:50051", help="server HOST:PORT (default %(default)s)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="read the article from this file (UTF-8; - for standard input)")
    source.add_argument("--text", help="the article text")
    parser.add_argument("--api-key", help="sent as `authorization: Bearer KEY` (servers run with --api-key-file)")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of the call, in seconds (default %(default)s)")
    args = parser.parse_args()

    text = read_text(args)
    metadata = [("authorization", f"Bearer {args.api_key}")] if args.api_key else None

    with tempfile.TemporaryDirectory(prefix="topics-stubs-") as stubs:
        pb, pb_grpc = generate_stubs(stubs)
        with grpc.insecure_channel(args.addr) as channel:
            client = pb_grpc.TopicClassifierStub(channel)
            try:
                answer = client.Classify(pb.ClassifyRequest(text=text), timeout=args.timeout, metadata=metadata)
            except grpc.RpcError as error:
                print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
                return 1

    print(f"label: {answer.label}")
    print(f"labels: {', '.join(answer.labels)}")
    print(f"language: {answer.language}")
    print(f"model_version: {answer.model_version}")
    print("scores:")
    for score in answer.scores:
        print(f"  {score.label:<14} {score.score:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
