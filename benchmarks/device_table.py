"""Prints the device suite's table from its JSON lines and the PyTorch peer's output.

    python benchmarks/device_table.py SUITE.jsonl PEER.txt

Rows: each ``train_step_speed.py``/``predict_throughput.py``/``input_speed.py`` JSON line, and
the peer's lines (``seed_arch_torch.py`` prints one per variant); the seed-plan row gets its
ratio to the compiled peer at the same batch.
"""

import json
import re
import sys

PEER_LINE = re.compile(r"^(?P<variant>\S+)\s+batch (?P<batch>\d+) size (?P<size>\d+):\s+"
                       r"(?P<img>[\d.]+) img/s\s+(?P<ms>[\d.]+) ms/step.*?(?P<tflop>[\d.]+) TFLOP/step\s+"
                       r"(?P<tflops>[\d.]+) TFLOP/s")


def _f(value, spec, scale=1.0):
    return "-" if value is None else format(value * scale, spec)


def _pct(value):
    return "-" if value is None else f"{100 * value:.1f}%"


def main(suite_path: str, peer_path: str | None) -> None:
    rows = [json.loads(line) for line in open(suite_path) if line.strip()]
    peers = []
    if peer_path:
        for line in open(peer_path):
            if m := PEER_LINE.match(line.strip()):
                peers.append(m.groupdict())
    device = next((r["device"] for r in rows if "device" in r), "?")
    print(f"\n## Device suite on {device}\n")
    print("| what | batch | img/s (mean) | ms/step | TFLOP/step | TFLOP/s | MFU | compile s | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["label"] == "aging":
            print(f"| aging to all {r['groups']} groups, {r['image_size']}px {r['dtype']} | {r['batch']} | "
                  f"{r['input_img_per_s']:.1f} in ({r['aged_img_per_s']:.0f} aged) | {r['mean_ms']:.1f} | "
                  f"{_f(r['tflop'], '.3f')} | {_f(r['tflops'], '.1f')} | {_pct(r['mfu'])} | "
                  f"{r['compile_s']:.1f} | {_f(r['peak_memory_gb'], '.1f')} |")
        elif r["label"] == "input":
            print(f"| input pipeline, {r['workers']} workers, {r['image_size']}px | {r['batch']} | "
                  f"{r['img_per_s']:.0f} | - | - | - | - | - | - |")
        else:
            print(f"| faceaging {r['label']}, {r['image_size']}px {r['dtype']} | {r['batch']} | "
                  f"{r['img_per_s']:.1f} (median {r['img_per_s_median']:.1f}) | {r['mean_ms']:.1f} | "
                  f"{_f(r['tflop'], '.3f')} | {_f(r['tflops'], '.1f')} | {_pct(r['mfu'])} | "
                  f"{r['compile_s']:.1f} | {_f(r['peak_memory_gb'], '.1f')} |")
    for p in peers:
        print(f"| PyTorch peer {p['variant']}, {p['size']}px | {p['batch']} | {float(p['img']):.1f} "
              f"(median) | {float(p['ms']):.1f} | {float(p['tflop']):.3f} | {float(p['tflops']):.1f} | - | - | - |")
    seed = next((r for r in rows if r["label"] == "seed"), None)
    for p in peers:
        if seed and int(p["batch"]) == seed["batch"]:
            print(f"\nfaceaging seed / peer {p['variant']}: {seed['img_per_s'] / float(p['img']):.2f}x "
                  f"(mean incl. R1 steps; {seed['img_per_s_median'] / float(p['img']):.2f}x median vs "
                  "the peer's median, which has no R1)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
