"""Counterfactual gradients at one step: same forward, the gradient of S(k, M_i) w.r.t. M_i blocked for rows with |M_i| < thr.
python cf.py CK SEED TARGET  (resumes CK and trains to TARGET like replay.py, then compares parameter gradients)"""
import sys, torch
import qimia.addressing as A
import qimia.memory.ntm as ntm_mod
from qimia.data.algorithmic import make_task, TrainingBatches
from qimia.memory.registry import create_memory_model
from qimia.training.sequence import sequence_metrics
from qimia.training.base import parameter_groups
torch.set_num_threads(1)
ck, seed, targets = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3:]]
task = make_task("copy")
net = create_memory_model("ntm", input_size=task.input_size, output_size=task.output_size)
opt = torch.optim.RMSprop(parameter_groups(net), lr=1e-4, alpha=0.95, eps=1e-8, weight_decay=0.0, momentum=0.9)
s = torch.load(ck, weights_only=True); net.load_state_dict(s["net"]); opt.load_state_dict(s["opt"]); start = s["step"]
train = TrainingBatches(task, 1, seed)
orig = A.ntm_address
MODE = {"block": None}
def addr(memory, previous, keys, strengths, gates, shifts, gammas):
    if MODE["block"] is not None:
        empty = (memory.norm(dim=-1, keepdim=True) < MODE["block"]).to(memory.dtype)
        mem_s = memory * (1 - empty) + memory.detach() * empty  # same value; no gradient through empty rows' similarity
        w = A.content_weighting(mem_s, keys, strengths)
    else:
        w = A.content_weighting(memory, keys, strengths)
    w = A.interpolate(w, previous, gates); w = A.circular_shift(w, shifts); return A.sharpen(w, gammas)
ntm_mod.ntm_address = addr
def grads(b):
    net.zero_grad(); sequence_metrics(net(b.inputs)[0], b.targets, b.mask).bits_per_sequence.backward()
    return {n: q.grad.abs().max().item() for n, q in net.named_parameters()}, torch.cat([q.grad.reshape(-1) for q in net.parameters()])
step = start
for target in targets:
    while step < target:
        b = train[step]; opt.zero_grad()
        sequence_metrics(net(b.inputs)[0], b.targets, b.mask).bits_per_sequence.backward()
        torch.nn.utils.clip_grad_value_(net.parameters(), 10.0); opt.step(); step += 1
    b = train[target]
    MODE["block"] = None; g0, f0 = grads(b)
    MODE["block"] = 1e-3; g1, f1 = grads(b)
    MODE["block"] = None
    print(f"step {target} len {b.length}: max|g| full {f0.abs().max():.3g} clamped-frac {(f0.abs()>10).float().mean():.3f} | "
          f"empty-row similarity gradient blocked: max|g| {f1.abs().max():.3g} clamped-frac {(f1.abs()>10).float().mean():.3f}; "
          f"cos(g_full, g_blocked) {torch.nn.functional.cosine_similarity(f0, f1, dim=0):.3f}")
