#!/usr/bin/env python3
"""The "peer": a faithful re-implementation of the Lambda + Step Functions design scanfleet replaces.

Each segment of the job is handled the way one Lambda invocation handled its task
``{"current_segment": i, "total_segments": N, "limit_of_rows": L}``: Scan the segment page by
page (Segment/TotalSegments, Limit=L, following LastEvaluatedKey) and, for each page, send every
row to SQS with one SendMessage per row (body = the item as plain JSON with the DynamoDB types
unwrapped, attributes table/String and segment/Number), at most ``--concurrency`` sends in flight
per segment. ``--segment-parallelism`` segments run at once (default: all, like the Map state
fanning out one Lambda per segment).

Unlike the original, a failed send is not swallowed: the run stops and exits non-zero.

Endpoint: AWS_ENDPOINT_URL. Region: AWS_REGION, else AWS_DEFAULT_REGION.
Prints one JSON line to stdout:
  {"rows", "seconds", "cpu_user", "cpu_sys", "max_rss_kib"}
``seconds`` is the wall time of the whole process (from before the AWS libraries are imported),
so that it covers the same span as the CPU figures from getrusage(RUSAGE_SELF).
"""

import time

_START = time.perf_counter()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import secrets  # noqa: E402
import sys  # noqa: E402
from decimal import Clamped, Context, Decimal, Inexact, Overflow, Rounded, Underflow  # noqa: E402

from aiobotocore.config import AioConfig  # noqa: E402
from aiobotocore.session import get_session  # noqa: E402


# --- DynamoDB item -> plain JSON ------------------------------------------------------------
#
# Mirrors boto3.dynamodb.types.TypeDeserializer (same dispatch, same 38-digit Decimal context),
# so the CPU cost matches what the Lambda paid, without depending on boto3 (whose botocore pin
# would have to match aiobotocore's). Two deviations, both needed to produce JSON at all and
# both matching scanfleet's plain output: sets become lists, binary becomes base64 text.

DYNAMODB_CONTEXT = Context(
    Emin=-128, Emax=126, prec=38, traps=[Clamped, Overflow, Inexact, Rounded, Underflow]
)


class TypeDeserializer:
    def deserialize(self, value):
        if not value:
            raise TypeError("Value must be a nonempty dictionary whose key is a valid dynamodb type.")
        dynamodb_type = list(value.keys())[0]
        try:
            deserializer = getattr(self, f"_deserialize_{dynamodb_type}".lower())
        except AttributeError:
            raise TypeError(f"Dynamodb type {dynamodb_type} is not supported")
        return deserializer(value[dynamodb_type])

    def _deserialize_null(self, value):
        return None

    def _deserialize_bool(self, value):
        return value

    def _deserialize_n(self, value):
        return DYNAMODB_CONTEXT.create_decimal(value)

    def _deserialize_s(self, value):
        return value

    def _deserialize_b(self, value):
        return base64.b64encode(value).decode("ascii")

    def _deserialize_ns(self, value):
        return list(map(self._deserialize_n, value))

    def _deserialize_ss(self, value):
        return list(map(self._deserialize_s, value))

    def _deserialize_bs(self, value):
        return list(map(self._deserialize_b, value))

    def _deserialize_l(self, value):
        return [self.deserialize(v) for v in value]

    def _deserialize_m(self, value):
        return {k: self.deserialize(v) for k, v in value.items()}


_DESERIALIZER = TypeDeserializer()

# json.dumps cannot write a number from text, so a non-integral Decimal goes through the
# default= hook as a unique placeholder string that is then replaced by its exact digits.
# Integral Decimals become Python ints, which are exact at any size.
_NONCE = secrets.token_hex(16)


def to_body(item):
    plain = {k: _DESERIALIZER.deserialize(v) for k, v in item.items()}
    exact = []

    def default(o):
        if isinstance(o, Decimal):
            if o == o.to_integral_value():
                return int(o)
            exact.append(str(o))
            return f"{_NONCE}:{len(exact) - 1}"
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

    body = json.dumps(plain, default=default)
    for i, digits in enumerate(exact):
        body = body.replace(f'"{_NONCE}:{i}"', digits, 1)
    return body


# --- the job ----------------------------------------------------------------------------------


async def gather_or_cancel(coros):
    """Runs coros concurrently; on the first failure cancels the rest and re-raises it."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def run_segment(ddb, sqs, args, segment):
    """What one Lambda invocation did for its task. Returns the number of rows sent."""
    sem = asyncio.Semaphore(args.concurrency)
    attributes = {
        "table": {"DataType": "String", "StringValue": args.table},
        "segment": {"DataType": "Number", "StringValue": str(segment)},
    }

    async def send(item):
        async with sem:
            await sqs.send_message(
                QueueUrl=args.queue_url,
                MessageBody=to_body(item),
                MessageAttributes=attributes,
            )

    sent = 0
    start_key = None
    while True:
        request = {
            "TableName": args.table,
            "Segment": segment,
            "TotalSegments": args.segments,
            "Limit": args.limit_of_rows,
        }
        if start_key:
            request["ExclusiveStartKey"] = start_key
        page = await ddb.scan(**request)
        items = page.get("Items", [])
        await gather_or_cancel(send(item) for item in items)
        sent += len(items)
        start_key = page.get("LastEvaluatedKey")
        if not start_key:
            return sent


async def run(args):
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    # Enough pooled connections for every send in flight plus one scan per running segment,
    # so the pool is not the bottleneck (each Lambda had its own client and connections).
    config = AioConfig(
        max_pool_connections=args.segment_parallelism * (args.concurrency + 1)
    )
    session = get_session()
    async with session.create_client(
        "dynamodb", region_name=region, endpoint_url=endpoint, config=config
    ) as ddb, session.create_client(
        "sqs", region_name=region, endpoint_url=endpoint, config=config
    ) as sqs:
        slots = asyncio.Semaphore(args.segment_parallelism)

        async def one(segment):
            async with slots:
                return await run_segment(ddb, sqs, args, segment)

        counts = await gather_or_cancel(one(s) for s in range(args.segments))
    return sum(counts)


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", required=True)
    p.add_argument("--segments", type=positive, required=True, help="TotalSegments of the job")
    p.add_argument("--queue-url", required=True)
    p.add_argument("--limit-of-rows", type=positive, default=3000, help="Scan Limit per page")
    p.add_argument("--concurrency", type=positive, default=5, help="sends in flight per segment")
    p.add_argument(
        "--segment-parallelism",
        type=positive,
        default=None,
        help="segments running at once (default: all)",
    )
    args = p.parse_args(argv)
    if args.segment_parallelism is None or args.segment_parallelism > args.segments:
        args.segment_parallelism = args.segments
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        rows = asyncio.run(run(args))
    except KeyboardInterrupt:
        print("peer: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # any AWS, network or data error ends the run
        print(f"peer: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - _START
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "rows": rows,
                "seconds": round(seconds, 6),
                "cpu_user": round(usage.ru_utime, 6),
                "cpu_sys": round(usage.ru_stime, 6),
                "max_rss_kib": usage.ru_maxrss,  # KiB on Linux
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
