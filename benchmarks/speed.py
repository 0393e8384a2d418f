"""Speed of one training step of every method against a reference loop and its unavoidable passes.

The benchmark is the package `benchmarks/speedbench/` (its docstring describes the measurements and
the command lines); this is its command line, e.g.

    python benchmarks/speed.py --device cpu --batch 128 --student smallcnn --teacher preact-resnet-18 \\
        --teacher-width 0.25 --threads 1 --repeats 3 --out benchmarks/results/speed_cpu.json
"""

from speedbench.cli import main

if __name__ == "__main__":
    main()
