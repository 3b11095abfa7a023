"""Resume loop.py's checkpoint CK, train (same recipe) up to step TARGET, then instrument TARGET's batch:
gradient norms of every addressing intermediate and per parameter.

python reports/memory/ntm_collapse/replay.py CK SEED TARGET [k=v model overrides]
"""
import json, sys
import torch
import qimia.addressing as A
import qimia.memory.ntm as ntm_mod
from qimia.data.algorithmic import make_task, TrainingBatches
from qimia.memory.registry import create_memory_model
from qimia.training.sequence import sequence_metrics
from qimia.training.base import parameter_groups

torch.set_num_threads(1)
ck, seed, target = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kw = {x.split("=", 1)[0]: json.loads(x.split("=", 1)[1]) for x in sys.argv[4:]}
task = make_task("copy")
net = create_memory_model("ntm", input_size=task.input_size, output_size=task.output_size, **kw)
opt = torch.optim.RMSprop(parameter_groups(net), lr=1e-4, alpha=0.95, eps=1e-8, weight_decay=0.0, momentum=0.9)
s = torch.load(ck, weights_only=True)
net.load_state_dict(s["net"]); opt.load_state_dict(s["opt"]); start = s["step"]
train = TrainingBatches(task, 1, seed)
for step in range(start, target):
    b = train[step]
    opt.zero_grad()
    sequence_metrics(net(b.inputs)[0], b.targets, b.mask).bits_per_sequence.backward()
    torch.nn.utils.clip_grad_value_(net.parameters(), 10.0)
    opt.step()

# instrument
store = []


def ntm_address(memory, previous, keys, strengths, gates, shifts, gammas):
    sim = A.cosine_similarity(keys, memory)
    wc = A.tempered_softmax(sim, strengths)
    wg = A.interpolate(wc, previous, gates)
    ws = A.circular_shift(wg, shifts)
    w = A.sharpen(ws, gammas)
    t = dict(memory=memory, keys=keys, sim=sim, wc=wc, wg=wg, ws=ws, w=w, strengths=strengths, gammas=gammas, gates=gates)
    for v in t.values():
        if v.requires_grad:
            v.retain_grad()
    store.append(t)
    return w


ntm_mod.ntm_address = ntm_address
b = train[target]
opt.zero_grad()
logits = net(b.inputs)[0]
m = sequence_metrics(logits, b.targets, b.mask)
m.bits_per_sequence.backward()
print(f"step {target} len {b.length} bits {m.bits_per_sequence.item():.1f} wrong {m.wrong_bits_per_sequence.item():.0f}")
for n, q in net.named_parameters():
    print(f"  {n:32s} gmax {q.grad.abs().max():9.3g}")
T = len(store) // 2
for name in ("memory", "keys", "sim", "wc", "wg", "ws", "w", "strengths", "gammas", "gates"):
    for head, off in (("write", 0), ("read", 1)):
        vals = []
        for t in range(T):
            v = store[2 * t + off][name]
            vals.append(v.grad.abs().max().item() if v.grad is not None else float("nan"))
        top = max(range(T), key=lambda t: vals[t] if vals[t] == vals[t] else -1)
        print(f"  d/d {head:5s} {name:9s} max over t {max(vals):9.3g} at t={top}")
# details at the worst write-memory gradient time: row norms and grads
for head, off in (("write", 0), ("read", 1)):
    t = max(range(T), key=lambda t: store[2 * t + off]["sim"].grad.abs().max().item())
    d = store[2 * t + off]
    rn = d["memory"][0].norm(dim=-1)
    gs = d["sim"].grad[0, 0].abs()
    i = int(gs.argmax())
    print(f"  {head} head t={t}: worst dL/dS at row {i} (|M_i|={rn[i]:.3g}, dL/dS={gs[i]:.3g}, w={d['w'][0,0,i]:.3g}, "
          f"beta={d['strengths'][0,0]:.3g}, |k|={d['keys'][0,0].norm():.3g}); rows |M|<1e-3: {(rn<1e-3).sum().item()}; "
          f"max dL/dM over rows with |M|<1e-3: {d['memory'].grad[0][rn<1e-3].norm(dim=-1).max() if (rn<1e-3).any() and d['memory'].grad is not None else 0:.3g}, "
          f"over other rows: {d['memory'].grad[0][rn>=1e-3].norm(dim=-1).max() if d['memory'].grad is not None else 0:.3g}")
    ws, w, g = d["ws"][0, 0], d["w"][0, 0], d["w"].grad[0, 0]
    j = int(d["ws"].grad[0, 0].abs().argmax())
    print(f"  {head} sharpen: worst dL/dws at row {j}: ws={ws[j]:.3g} w={w[j]:.3g} dL/dws={d['ws'].grad[0,0,j]:.3g} gamma={d['gammas'][0,0]:.3g}")
print("per-t |dL/d read w|, |dL/d read ws|, read w max, read ws top2, gamma_r, gate_r:")
for t in range(T):
    d = store[2 * t + 1]
    top = d["ws"][0, 0].topk(2).values.tolist()
    print(f"  t={t:2d} |dw| {d['w'].grad.norm():9.3g} |dws| {d['ws'].grad.norm():9.3g} |dwg| {d['wg'].grad.norm():9.3g} wmax {d['w'][0,0].max():.3f} argmax {int(d['w'][0,0].argmax())} ws-top2 {top[0]:.3f},{top[1]:.3f} gamma {d['gammas'][0,0]:.2f} gate {d['gates'][0,0]:.2f} beta {d['strengths'][0,0]:.2f}")
