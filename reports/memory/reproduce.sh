#!/usr/bin/env bash
# Reproduce every result quoted in docs/memory.md (CPU; one job at a time, niced), in priority order.
# Each command writes under runs/memory/<name>/ (history.json / results.json, curve.png, checkpoint.pt);
# `python reports/memory/collect_results.py` then copies the small artefacts into reports/memory/.
# Budgets are environment variables (defaults = the quoted runs). NTM_RESUME=1 finishes/continues the NTM
# run from its checkpoint instead of starting it again.
set -euo pipefail
export PYTHONPATH=${PYTHONPATH:-src}
Q="nice -n 10 python -m qimia.memory.cli"
NTM_STEPS=${NTM_STEPS:-5000}
COMMON="threads=1 progress=false"

# 1. NTM (LSTM controller, 128 x 20 memory, 1 read + 1 write head) on copy, lengths 1-20; then lengths 40 and 80
$Q train task=copy model=ntm steps=$NTM_STEPS batch_size=16 lr=1e-3 eval_every=500 eval_lengths=40,80 $COMMON \
   out=runs/memory/copy_ntm_s0 ${NTM_RESUME:+resume=runs/memory/copy_ntm_s0/checkpoint.pt}
# 2. parameter-matched LSTM baseline (hidden 119: 62.8k vs NTM 62.7k parameters), same data, optimizer, steps;
#    three seeds (the NTM's one seed took 26 min of shared CPU, the LSTM's 1 min)
for s in 0 1 2; do
  $Q train task=copy model=lstm seed=$s steps=$NTM_STEPS batch_size=16 lr=1e-3 eval_every=500 eval_lengths=40,80 \
     $COMMON out=runs/memory/copy_lstm_s$s
done
# 3. DNC (LSTM controller, 64 x 20 memory, 1 read head) on copy
$Q train task=copy model=dnc memory_slots=64 read_heads=1 steps=${DNC_STEPS:-2000} batch_size=16 lr=1e-3 \
   eval_every=250 eval_lengths=40 $COMMON out=runs/memory/copy_dnc_s0
# 4. RAM on MNIST 28x28, 6 glimpses of 8x8, one scale (the quoted run did 2 epochs, then resume= to 20)
$Q ram data=mnist epochs=${RAM_EPOCHS:-20} glimpses=6 patch=8 scales=1 threads=1 progress=false out=runs/memory/ram_mnist
# 5. Universal Transformer + ACT vs tied fixed-depth UT vs 6-layer Transformer, reverse task, 2 seeds
$Q ut task=reverse steps=${UT_STEPS:-1000} seeds=0,1 models=ut_act,ut,transformer threads=1 progress=false \
   out=runs/memory/ut_reverse
# 6. DNC and the LSTM baseline on associative recall (2-6 items of 3 x 6-bit vectors)
$Q train task=associative_recall model=dnc memory_slots=32 read_heads=1 steps=${RECALL_STEPS:-1500} batch_size=16 \
   lr=1e-3 eval_every=250 $COMMON out=runs/memory/recall_dnc_s0
$Q train task=associative_recall model=lstm steps=${RECALL_STEPS:-1500} batch_size=16 lr=1e-3 eval_every=250 \
   $COMMON out=runs/memory/recall_lstm_s0
# 7. Implicit attention: sequential Jacobian of a delay-5 LSTM, sensitivity maps of a digits MLP
$Q jacobian kind=rnn out=runs/memory/jacobian
$Q jacobian kind=classifier out=runs/memory/jacobian
# 8. throughput benchmark (writes benchmarks/results/memory_throughput.{json,md})
nice -n 10 python benchmarks/memory_throughput.py
