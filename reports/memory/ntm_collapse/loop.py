"""Mirror of `qimia memory experiment=ntm_paper` (same seeding, init, batches, RMSprop, value clip)
with per-step diagnostics and a checkpoint every --save-every steps.

python reports/memory/ntm_collapse/loop.py --seed 0 --steps 6000 --out /tmp/ntm/loop_s0 [--model key=value ...] [--resume ckpt]
"""
import argparse, json, math, time, os
from pathlib import Path

import torch
import lightning as L

from qimia.data.algorithmic import make_task, TrainingBatches, EvaluationBatches
from qimia.memory.registry import create_memory_model
from qimia.training.sequence import sequence_metrics
from qimia.training.base import parameter_groups

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, default=0)
p.add_argument("--steps", type=int, default=6000)
p.add_argument("--out", required=True)
p.add_argument("--save-every", type=int, default=250)
p.add_argument("--eval-every", type=int, default=250)
p.add_argument("--model", nargs="*", default=[])
p.add_argument("--resume", default=None)
p.add_argument("--clip", type=float, default=10.0)
args = p.parse_args()

torch.set_num_threads(1)
out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
L.seed_everything(args.seed, workers=True, verbose=False)
task = make_task("copy")
kw = {}
for kv in args.model:
    k, v = kv.split("=")
    try:
        v = json.loads(v)
    except json.JSONDecodeError:  # a bare word (e.g. uniform) stays a string
        pass
    kw[k] = v
net = create_memory_model("ntm", input_size=task.input_size, output_size=task.output_size, **kw)
opt = torch.optim.RMSprop(parameter_groups(net), lr=1e-4, alpha=0.95, eps=1e-8, weight_decay=0.0, momentum=0.9)
start = 0
if args.resume:
    ck = torch.load(args.resume, weights_only=True)
    net.load_state_dict(ck["net"]); opt.load_state_dict(ck["opt"]); start = ck["step"]
train = TrainingBatches(task, 1, args.seed)
val = EvaluationBatches(task, task.lengths, 32, args.seed, "val")
log = open(out / "steps.jsonl", "a")
evlog = open(out / "eval.jsonl", "a")


def evaluate():
    net.eval()
    wb, bits = [], []
    with torch.no_grad():
        for i in range(len(val)):
            b = val[i]
            m = sequence_metrics(net(b.inputs)[0], b.targets, b.mask)
            wb.append(m.wrong_bits_per_sequence.item()); bits.append(m.bits_per_sequence.item())
    net.train()
    return sum(wb) / len(wb), sum(bits) / len(bits)


t0 = time.time()
for step in range(start, args.steps):
    b = train[step]
    opt.zero_grad()
    logits, state = net(b.inputs)
    m = sequence_metrics(logits, b.targets, b.mask)
    m.bits_per_sequence.backward()
    grads = [q.grad for q in net.parameters() if q.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    finite = bool(torch.isfinite(flat).all())
    gmax = flat.abs().max().item()
    gnorm = flat.norm().item()
    clamped = (flat.abs() > args.clip).float().mean().item()
    if args.clip > 0:
        torch.nn.utils.clip_grad_value_(net.parameters(), args.clip)
    opt.step()
    rec = {"step": step, "len": b.length, "bits": m.bits_per_sequence.item(), "wrong": m.wrong_bits_per_sequence.item(),
           "gmax": gmax, "gnorm": gnorm, "clamped": clamped, "finite": finite,
           "mem_min_row": state.memory.norm(dim=-1).min().item(), "mem_max_row": state.memory.norm(dim=-1).max().item()}
    log.write(json.dumps(rec) + "\n")
    done = step + 1
    if done % args.save_every == 0:
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": done}, out / f"ck{done:06d}.pt")
    if done % args.eval_every == 0:
        wb, bits = evaluate()
        evlog.write(json.dumps({"step": done, "wrong_bits": wb, "bits": bits, "time": time.time() - t0}) + "\n")
        evlog.flush(); log.flush()
        print(f"step {done} val wrong_bits {wb:.3f} bits {bits:.2f} t {time.time()-t0:.0f}s", flush=True)
