"""A decompression bomb by shape: a 1 x 3,000,000 PNG is 6 kB and 3 megapixels, which Pillow's bomb check passes,
but resizing its short side to 32 px stretched its long side to 96 million pixels (16 GB). The PNGs are decoded in
a process of their own, each decode's peak memory measured (VmHWM, the peak RSS, reset before it), under a 4 GiB
address-space cap so that the shared machine never lends an unbounded decode its 16 GB."""

import json
import subprocess
import sys

DECODE = """
import io, json, resource, sys
from PIL import Image
import acgan.data.sources as sources

status = lambda key: int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])
resource.setrlimit(resource.RLIMIT_AS, ((status("VmSize:") << 10) + (4 << 30),) * 2)
results = []
for width, height, max_aspect in json.loads(sys.argv[1]):
    sources.MAX_ASPECT = max_aspect
    png = io.BytesIO()
    Image.new("L", (width, height), 200).save(png, "PNG")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak RSS (VmHWM, what ru_maxrss reports) starts again from the RSS now
    before = status("VmRSS:")
    decoded = sources._decode((png.getvalue(), 32))
    results.append({"png_bytes": len(png.getvalue()), "refused": decoded is None,
                    "peak_mib": (status("VmHWM:") - before) / 1024,
                    "shape": None if decoded is None else list(decoded.shape)})
print(json.dumps(results))
"""
SHAPES = [(1, 3_000_000), (1, 300_000), (300_000, 1), (20, 401)]


def decode_in_a_process(cases: list[tuple[int, int, float]]) -> list[dict]:
    proc = subprocess.run([sys.executable, "-c", DECODE, json.dumps(cases)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_long_thin_pngs_are_refused_by_their_header_and_their_resize_is_bounded(fault_report):
    from acgan.data.sources import MAX_ASPECT

    # Over 20 times longer than wide: refused before decoding. Then, without that refusal, the resize itself
    # stays small: it reads only the centre square.
    *refused, unrefused = decode_in_a_process([(w, h, MAX_ASPECT) for w, h in SHAPES] + [(1, 3_000_000, 10**9)])
    for (width, height), result in zip(SHAPES, refused):
        assert result["refused"] and result["peak_mib"] < 100, (width, height, result)
    assert unrefused["shape"] == [3, 32, 32] and unrefused["peak_mib"] < 100, unrefused
    fault_report("image bomb by shape", "PNGs of 1 x 3,000,000 (6 kB), 1 x 300,000, 300,000 x 1 and 20 x 401 px "
                 "decoded in a process of their own, peak RSS measured", len(SHAPES), len(SHAPES), "none",
                 f"none; refused by their header at +{max(r['peak_mib'] for r in refused):.0f} MiB peak (1 x "
                 f"300,000 took +1.5 GiB before); with the refusal lifted, 1 x 3,000,000 decodes at "
                 f"+{unrefused['peak_mib']:.0f} MiB")
