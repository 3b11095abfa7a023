#!/usr/bin/env bash
# Reproduce the NTM / DNC / LSTM results quoted in docs/memory.md (CPU; one job at a time, niced), in
# priority order. Each run writes its folder outputs/memory/reproduce/<run>/ (results.json, curve.png,
# weightings*.png, checkpoints/last.ckpt, CSV and TensorBoard logs); then
#   python reports/memory/collect_results.py
# copies the small artefacts into reports/memory/ and updates summary.json and curves.json.
# Budgets are environment variables (defaults = the quoted runs). NTM_RESUME=1 continues the NTM run
# from its last checkpoint (ckpt_path=last) instead of starting it again.
# Step 4d (RAM) reads mnist.pkl.gz from paths.data (QIMIA_DATA_DIR); the Universal Transformer and Jacobian
# runs are described in docs/attention.md.
set -euo pipefail
Q="nice -n 10 qimia memory"
OUT=outputs/memory/reproduce
COMMON="threads=1 trainer.enable_progress_bar=false"
NTM_STEPS=${NTM_STEPS:-5000}

# 0. NTM on copy under the paper's recipe (experiment=ntm_paper: RMSprop lr 1e-4, momentum 0.9, batch 1,
#    gradient components clamped to +-10), five seeds of 20,000 sequences, tested at lengths 40 and 80
for s in 0 1 2 3 4; do
  $Q experiment=ntm_paper seed=$s trainer.max_steps=${NTM_PAPER_STEPS:-20000} 'data.eval_lengths=[40,80]' $COMMON \
     hydra.run.dir=$OUT/copy_ntm_s$s
done
# 0b. the same, with the rate divided by 10 after 10 evaluations (2,500 sequences) without a better validation
#     (experiment=ntm_paper_decay: once copy is solved the rate steps down to 1e-5, 1e-6, ...), five seeds
for s in 0 1 2 3 4; do
  $Q experiment=ntm_paper_decay seed=$s trainer.max_steps=${NTM_PAPER_STEPS:-20000} 'data.eval_lengths=[40,80]' $COMMON \
     hydra.run.dir=$OUT/copy_ntm_decay_s$s
done
# 0c. the paper's recipe with RMSprop in the form the paper cites (experiment=ntm_paper_graves: Graves, 2013, centred,
#     epsilon 1e-4 under the root), five seeds
for s in 0 1 2 3 4; do
  $Q experiment=ntm_paper_graves seed=$s trainer.max_steps=${NTM_PAPER_STEPS:-20000} 'data.eval_lengths=[40,80]' $COMMON \
     hydra.run.dir=$OUT/copy_ntm_graves_s$s
done
# 0d. the paper's recipe with every gradient component clamped to [-1, 1] instead of [-10, 10], five seeds
for s in 0 1 2 3 4; do
  $Q experiment=ntm_paper trainer.gradient_clip_val=1 seed=$s trainer.max_steps=${NTM_PAPER_STEPS:-20000} \
     'data.eval_lengths=[40,80]' $COMMON hydra.run.dir=$OUT/copy_ntm_clamp1_s$s
done
# 0e. the same five runs continued to 40,000 sequences, each in a copy of its folder (so 0d's results stay)
for s in 0 1 2 3 4; do
  rm -rf $OUT/copy_ntm_clamp1_long_s$s && cp -r $OUT/copy_ntm_clamp1_s$s $OUT/copy_ntm_clamp1_long_s$s
  $Q experiment=ntm_paper trainer.gradient_clip_val=1 seed=$s trainer.max_steps=$((2 * ${NTM_PAPER_STEPS:-20000})) \
     'data.eval_lengths=[40,80]' $COMMON ckpt_path=last hydra.run.dir=$OUT/copy_ntm_clamp1_long_s$s
done
# 0f. the paper's recipe with the rate divided by 10 once, at the first evaluation that meets the copy bar
#     (experiment=ntm_paper_solved), five seeds
for s in 0 1 2 3 4; do
  $Q experiment=ntm_paper_solved seed=$s trainer.max_steps=${NTM_PAPER_STEPS:-20000} 'data.eval_lengths=[40,80]' $COMMON \
     hydra.run.dir=$OUT/copy_ntm_solved_s$s
done
# 1. NTM (LSTM controller, 128 x 20 memory, 1 read + 1 write head) on copy, lengths 1-20, under Adam; also lengths
#    40 and 80
$Q model=ntm task=copy trainer.max_steps=$NTM_STEPS data.batches_per_epoch=500 'data.eval_lengths=[40,80]' $COMMON \
   hydra.run.dir=$OUT/copy_ntm_adam_s0 ${NTM_RESUME:+ckpt_path=last}
# 2. the parameter-matched LSTM baseline (hidden 119: 62.8k vs the NTM's 62.7k parameters): same data,
#    optimizer and steps; three seeds
for s in 0 1 2; do
  $Q model=lstm task=copy seed=$s trainer.max_steps=$NTM_STEPS data.batches_per_epoch=500 'data.eval_lengths=[40,80]' \
     $COMMON hydra.run.dir=$OUT/copy_lstm_s$s
done
# 3. DNC (LSTM controller, 64 x 20 memory, 1 read head) on copy
$Q model=dnc task=copy model.memory_slots=64 model.read_heads=1 trainer.max_steps=${DNC_STEPS:-2000} \
   'data.eval_lengths=[40]' $COMMON hydra.run.dir=$OUT/copy_dnc_s0
# 4. DNC (32 x 20 memory, 1 read head) and the LSTM baseline on associative recall (2-6 items of 3 x 6-bit vectors)
$Q model=dnc task=associative_recall model.memory_slots=32 model.read_heads=1 trainer.max_steps=${RECALL_STEPS:-1500} \
   $COMMON hydra.run.dir=$OUT/recall_dnc_s0
$Q model=lstm task=associative_recall trainer.max_steps=${RECALL_STEPS:-1500} $COMMON hydra.run.dir=$OUT/recall_lstm_s0
# 4b. DNC on repeat copy as in google-deepmind/dnc's training demo (experiment=dnc_repeat_copy, 100k steps), three seeds;
#     also tested on patterns of 4 vectors (trained on 1-2)
for s in 0 1 2; do
  $Q experiment=dnc_repeat_copy seed=$s 'data.eval_lengths=[4]' $COMMON hydra.run.dir=$OUT/repeat_copy_dnc_s$s
done
# 4c. DNC (LSTM 100, memory 32 x 20, 2 read heads) on associative recall for 10,000 steps (experiment=dnc_recall),
#     three seeds; also tested on 12 items (trained on 2-6)
for s in 0 1 2; do
  $Q experiment=dnc_recall seed=$s 'data.eval_lengths=[12]' $COMMON hydra.run.dir=$OUT/recall_dnc_10k_s$s
done
# 4d. RAM on MNIST 28 x 28 with kevinzakka/recurrent-visual-attention's recipe (ram_experiment=mnist_reference:
#     200 epochs, the rate divided by 10 on a 20-epoch validation plateau, M = 10 sampled trajectories at
#     evaluation), three seeds; then the same recipe on 60 x 60 translated MNIST, two seeds of 60 epochs
for s in 0 1 2; do
  $Q ram ram_experiment=mnist_reference seed=$s $COMMON hydra.run.dir=$OUT/ram_mnist_reference_s$s
done
for s in 0 1; do
  $Q ram ram_experiment=translated_mnist_reference seed=$s trainer.max_epochs=${RAM_TRANSLATED_EPOCHS:-60} $COMMON \
     hydra.run.dir=$OUT/ram_translated_mnist_s$s
done
# 5. throughput benchmark (writes benchmarks/results/memory_throughput.{json,md})
nice -n 10 python benchmarks/memory_throughput.py
