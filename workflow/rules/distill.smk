# Step 1: teacher-embedding cache (scattered over shard groups) and distillation (DDP).

CACHE = f"{R}/cache/{TEACHER}"


rule cache_list:
    input:
        f"{R}/checks/imagenet.json",
    output:
        f"{CACHE}/images.parquet",
    params:
        images=imagenet_dir(),
    log:
        f"{R}/logs/cache_list.log",
    shell:
        "{PY} cache-list --images {params.images} --out {output} > {log} 2>&1"


rule cache_fill:
    input:
        images=f"{CACHE}/images.parquet",
        weights=weights_marker(TEACHER),
    output:
        f"{CACHE}/part-{{part}}.json",
    params:
        images=imagenet_dir(),
        c=config["cache"],
        parts=config["cache"]["parts"],
        rw="--random-weights" if config["teacher"]["random_weights"] else "",
    resources:
        **slurm_resources(config["resources"]["cache"]),
    log:
        f"{R}/logs/cache_fill/part-{{part}}.log",
    benchmark:
        f"{R}/benchmarks/cache_fill/part-{{part}}.tsv"
    shell:
        "{PY} cache-fill --teacher {TEACHER} --weights-dir {config[weights_dir]} "
        "--images {params.images} --list {input.images} --part {wildcards.part} "
        "--parts {params.parts} --shard-size {params.c[shard_size]} --dtype {params.c[dtype]} "
        "--batch-size {params.c[batch_size]} --workers {params.c[workers]} "
        "--on-bad-image {params.c[on_bad_image]} --device {config[device]} {params.rw} "
        "--out-dir {CACHE} > {log} 2>&1"


rule cache_index:
    input:
        expand(f"{CACHE}/part-{{part}}.json", part=range(config["cache"]["parts"])),
    output:
        f"{CACHE}/index.parquet",
    params:
        parts=config["cache"]["parts"],
    log:
        f"{R}/logs/cache_index.log",
    shell:
        "{PY} cache-index --cache-dir {CACHE} --parts {params.parts} --out {output} > {log} 2>&1"


def distill_launcher():
    """How the trainer's processes are started; the trainer reads rank/world from the env."""
    d = config["distill"]
    n = d["resources"]["tasks_per_node"]
    if d["launcher"] == "torchrun":
        return f"torchrun --standalone --nproc_per_node={n} -m lipsim distill"
    if d["launcher"] == "srun":
        # With the `mpi` resource the plugin runs this line in the batch script itself, so
        # srun starts every task of the allocation (all nodes); ranks come from SLURM_*.
        return "srun python -m lipsim distill"
    return f"{PY} distill"


def distill_resources():
    res = config["distill"]["resources"]
    out = slurm_resources(res)
    if config["distill"]["launcher"] == "srun":
        out.update(nodes=res["nodes"], tasks=res["nodes"] * res["tasks_per_node"], mpi="srun")
        if res["gpu"]:
            # The plugin's `gpu` is a job total (--gpus); DDP wants the same count per node.
            out.pop("gpu", None)
            out["slurm_extra"] = f"'--gpus-per-node={res['gpu']}'"
    return out


if config["pretrained_checkpoint"]:

    rule import_pretrained:
        input:
            config["pretrained_checkpoint"],
        output:
            checkpoint("pretrained"),
        params:
            preset=config["model"]["preset"],
            size=config["image_size"],
            emb_dim=teacher_emb_dim(),
        log:
            f"{R}/logs/import_pretrained.log",
        shell:
            "{PY} import-checkpoint --src {input} --preset {params.preset} "
            "--image-size {params.size} --emb-dim {params.emb_dim} --stage pretrained "
            "--teacher {TEACHER} --out {output} > {log} 2>&1"

else:

    rule distill:
        input:
            index=f"{CACHE}/index.parquet",
        output:
            checkpoint("pretrained"),
        params:
            d=config["distill"],
            images=imagenet_dir(),
            preset=config["model"]["preset"],
            size=config["image_size"],
            launcher=distill_launcher(),
            workdir=f"{R}/train/pretrained",
        resources:
            **distill_resources(),
        log:
            f"{R}/logs/distill.log",
        benchmark:
            f"{R}/benchmarks/distill.tsv"
        shell:
            "{params.launcher} --cache-dir {CACHE} --images {params.images} "
            "--preset {params.preset} --image-size {params.size} --epochs {params.d[epochs]} "
            "--batch-size {params.d[batch_size]} --lr {params.d[lr]} --beta1 {params.d[beta1]} "
            "--beta2 {params.d[beta2]} --weight-decay {params.d[weight_decay]} "
            "--schedule {params.d[schedule]} --warmup-steps {params.d[warmup_steps]} "
            "--seed {params.d[seed]} --workers {params.d[workers]} --amp {params.d[amp]} "
            "--ckpt-every {params.d[ckpt_every]} --device {config[device]} --teacher {TEACHER} "
            "--workdir {params.workdir} --metrics {params.workdir}/metrics.csv "
            "--out {output} > {log} 2>&1"
