"""Replay the baseline recipe from CK to UNTIL; every EVERY steps measure on fixed sequences the read head's
shift kernel during the input phase (s_0 - s_+1: >0 keeps the head parked) and the failures."""
import sys, torch
import qimia.memory.ntm as ntm_mod
from qimia.data.algorithmic import make_task, TrainingBatches, EvaluationBatches
from qimia.memory.registry import create_memory_model
from qimia.training.sequence import sequence_metrics
from qimia.training.base import parameter_groups
torch.set_num_threads(1)
ck, seed, until, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
task = make_task("copy")
net = create_memory_model("ntm", input_size=task.input_size, output_size=task.output_size)
opt = torch.optim.RMSprop(parameter_groups(net), lr=1e-4, alpha=0.95, eps=1e-8, weight_decay=0.0, momentum=0.9)
s = torch.load(ck, weights_only=True); net.load_state_dict(s["net"]); opt.load_state_dict(s["opt"]); start = s["step"]
tr = TrainingBatches(task, 1, seed); ev = EvaluationBatches(task, list(range(10, 21)), 8, seed, "val")
rec = []
orig = net.read_params.forward
def hook(h):
    p = orig(h); rec.append(p); return p
def measure():
    net.eval(); margins, mins, fails, n = [], [], 0, 0
    with torch.no_grad():
        for i in range(len(ev)):
            b = ev[i]; rec.clear(); net.read_params.forward = hook
            m = net(b.inputs)[0]; net.read_params.forward = orig
            L = b.length
            sh = torch.stack([p.shifts[:, 0] for p in rec[:L]], 1)  # (B, L, 3) input steps (before the delimiter)
            d = sh[..., 1] - sh[..., 2]
            margins.append(d.mean().item()); mins.append(d.min(1).values)
            wrong = (((m > 0).float() != b.targets).float() * b.mask.unsqueeze(-1)).sum((1, 2))
            fails += int((wrong > 2 * L).sum()); n += b.inputs.shape[0]
    net.train(); mins = torch.cat(mins)
    return sum(margins) / len(margins), mins.median().item(), (mins < 0).float().mean().item(), fails / n
step = start
print(f"{step}: mean(s0-s+1) %.3f median-of-min %.3f frac-seq-with-min<0 %.2f fail %.2f" % measure())
while step < until:
    b = tr[step]; opt.zero_grad()
    sequence_metrics(net(b.inputs)[0], b.targets, b.mask).bits_per_sequence.backward()
    torch.nn.utils.clip_grad_value_(net.parameters(), 10.0); opt.step(); step += 1
    if step % every == 0:
        print(f"{step}: mean(s0-s+1) %.3f median-of-min %.3f frac-seq-with-min<0 %.2f fail %.2f" % measure(), flush=True)
