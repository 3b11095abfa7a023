"""Counterfactual continuation of a loop.py checkpoint under a modified recipe or model.
python cfopt.py CK SEED UNTIL NAME [lr=..] [momentum=..] [clip=..] [clipnorm=..] [model k=v ...]"""
import sys, json, torch, time
from qimia.data.algorithmic import make_task, TrainingBatches, EvaluationBatches
from qimia.memory.registry import create_memory_model
from qimia.training.sequence import sequence_metrics
from qimia.training.base import parameter_groups
torch.set_num_threads(1)
ck, seed, until, name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
opts = dict(lr=1e-4, momentum=0.9, clip=10.0, clipnorm=0.0, norm=0.0); model_kw = {}; freeze = []
for kv in sys.argv[5:]:
    k, v = kv.split("=", 1)
    if k.startswith("m."): model_kw[k[2:]] = json.loads(v)
    elif k == "freeze": freeze.append(v)
    else: opts[k] = float(v)
task = make_task("copy")
net = create_memory_model("ntm", input_size=task.input_size, output_size=task.output_size, **model_kw)
s = torch.load(ck, weights_only=True); net.load_state_dict(s["net"], strict=False); start = s["step"]
opt = torch.optim.RMSprop(parameter_groups(net), lr=1e-4, alpha=0.95, eps=1e-8, weight_decay=0.0, momentum=0.9)
opt.load_state_dict(s["opt"])
for g in opt.param_groups: g["lr"], g["momentum"] = opts["lr"], opts["momentum"]
if opts["norm"] > 0:
    for st in opt.state.values(): st["square_avg"].mul_(1.0 / (8 * 10.5) ** 2)
tr = TrainingBatches(task, 1, seed); val = EvaluationBatches(task, task.lengths, 32, seed, "val")
def ev():
    net.eval(); w = []
    with torch.no_grad():
        for i in range(len(val)):
            b = val[i]; w.append(sequence_metrics(net(b.inputs)[0], b.targets, b.mask).wrong_bits_per_sequence.item())
    net.train(); return sum(w) / len(w)
out = [f"{start}:{ev():.2f}"]; bad = 0
for step in range(start, until):
    b = tr[step]; opt.zero_grad()
    m = sequence_metrics(net(b.inputs)[0], b.targets, b.mask); (m.bits_per_sequence / (8 * b.length) if opts["norm"] > 0 else m.bits_per_sequence).backward()
    bad += int(m.wrong_bits_per_sequence.item() > 2 * b.length)
    for n_, q_ in net.named_parameters():
        if any(n_.startswith(f) for f in freeze): q_.grad = None
    if opts["clipnorm"] > 0: torch.nn.utils.clip_grad_norm_(net.parameters(), opts["clipnorm"])
    if opts["clip"] > 0: torch.nn.utils.clip_grad_value_(net.parameters(), opts["clip"])
    opt.step()
    if (step + 1) % 50 == 0: out.append(f"{step+1}:{ev():.2f}")
print(name, opts, model_kw, freeze, "| train seqs with >25% wrong bits:", bad, "| val wrong bits:", " ".join(out), flush=True)
