"""`acgan serve`: the ensemble over HTTP (Open Inference Protocol v2, KServe), with a gallery page at /."""

from __future__ import annotations

import argparse
import logging

from acgan.settings import ServeSettings
from acgan_cli.flags import settings_flags, validated


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the ensemble over HTTP (Open Inference Protocol v2, KServe), with a "
                       "gallery page at /")
    p.add_argument("--store", required=True, help="a directory, or s3://BUCKET/PREFIX (see ACGAN_S3_ENDPOINT)")
    settings_flags(p, ServeSettings, skip={"store"})
    p.set_defaults(run=serve)


def serve(args: argparse.Namespace) -> None:
    from acgan.serving.server import serve

    # kserve's notice about an API this server does not offer, at every start (kserve/protocol/rest/server.py).
    logging.getLogger("kserve").addFilter(lambda r: r.getMessage() != "OpenAI endpoints not registered")
    serve(validated(args, ServeSettings))
