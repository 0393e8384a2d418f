"""Speed of one training step of every method, measured three ways in one run.

For each method (pgd-at, trades, mart, kd, ard, iad, rslad, adaad, mtard, paths, gacd):

- **ours**: exactly what `robustdistill.train.fit` does per step: `method(student, x, y, index)`
  inside the per-step random-start context (and bf16 autocast + channels_last on a GPU), then
  `loss.backward()` and one SGD step.
- **reference**: a straightforward loop in the style of the method's original repository, written
  out in `reference.py` (eager, fp32, NCHW, one network pass per call, the attack as a plain PGD loop, a
  teacher called once per use, `paths` as two unbatched branches aligned step by step). Each one
  says which repository's structure it follows; where we could not check the original, the
  reference computes only what the method's formula needs (never an invented redundancy).
- **unavoidable**: the sum of the network passes the method cannot do without, each measured alone
  (within every repeat, next to ours and the reference) in our precision and memory format, in the
  fastest way: one call over all its rows on a GPU, calls of one batch on the CPU (where calls over
  thousands of rows are 2-3x slower per row): K student forward + input-backward
  passes for the attack, the teacher forwards the loss needs, and one student forward + backward +
  SGD step over every row the outer loss sees (METHODS.md gives the `paths` cost model).

Also reported: images per second (batch / step time) and peak memory of one step (GPU:
`torch.cuda.max_memory_allocated` above the memory held before the step; CPU: the highest running
sum of the tensor allocations and frees that `torch.profiler` records during one extra, untimed
step, the same quantity without a caching allocator). Ratios are what count:
ours/reference and ours/unavoidable come from the same process, interleaved repeat by repeat,
with the best of the repeats (as `timeit`: on a shared machine noise only ever adds time; the medians
are in the JSON too).

On a CPU shared with other jobs use `--threads 1`: with more threads than free cores, OpenMP
threads spin-wait for each other and step times vary several-fold from repeat to repeat.

Examples::

    # CPU (records benchmarks/results/speed_cpu.json and .md)
    python benchmarks/speed.py --device cpu --batch 128 --student smallcnn --teacher preact-resnet-18 \\
        --teacher-width 0.25 --threads 1 --repeats 3 --out benchmarks/results/speed_cpu.json
    # GPU: ResNet-18 student, WRN-34-10 teacher, 32x32 synthetic tensors, bf16 autocast + channels_last
    python benchmarks/speed.py --device cuda --batch 128 --student resnet-18 --teacher wrn-34-10 \\
        --repeats 10 --out benchmarks/results/speed_gpu.json
    # configurations of one method against a baseline (ours only, interleaved), added to a recorded run
    python benchmarks/speed.py --device cpu --batch 128 --student smallcnn --teacher preact-resnet-18 \\
        --teacher-width 0.25 --threads 1 --repeats 2 --methods "" --variant "share=paths:share_forward=true" \\
        --variant "even=paths:aligned_steps=2,4,6,8,10;share_forward=true" --add-to benchmarks/results/speed_cpu.json

`--variant LABEL=METHOD:key=value;key=value` times `ours` of a method with those options (values
as on the command line, `;` between options) against `ours` of `--baseline` (ard) in the same
process, repeat by repeat, in wall-clock and in process CPU seconds; `--add-to` appends them, with
their own command and machine, to the `variant_runs` of an existing JSON record and rewrites its table.

The package: `bench` (set-up, timing, ours as `fit` runs it), `reference` (the reference loops),
`passes` (the unavoidable passes and each method's pass plan), `measure` (the interleaved measurements),
`report` (machine description and the markdown table), `cli` (the command line of `benchmarks/speed.py`).
"""
