# Step 1: teacher-embedding cache (scattered over shard groups) and distillation (DDP).


rule cache_list:
    input:
        f"{R}/checks/imagenet.json",
    output:
        f"{R}/cache/{{cache}}/images.parquet",
    wildcard_constraints:
        cache="|".join(re.escape(t) for t in TRAINED_TEACHERS) or "(?!)",
    params:
        images=imagenet_dir(),
    conda:
        "../../envs/lipsim.yaml"
    log:
        f"{R}/logs/cache_list/{{cache}}.log",
    shell:
        "python -m lipsim cache-list --images {params.images} --out {output} > {log} 2>&1"


rule cache_fill:
    input:
        images=cache_images,
        weights=lambda wc: weights_marker(CACHE_TEACHER[wc.cache][0]),
    output:
        f"{R}/cache/{{cache}}/part-{{part}}.json",
    wildcard_constraints:
        cache=CACHE_RE,
    params:
        device=config["device"],
        weights=lambda wc: config["weights_dir"],
        teacher=lambda wc: CACHE_TEACHER[wc.cache][0],
        cache=lambda wc, output: os.path.dirname(output[0]),
        images=imagenet_dir(),
        c=config["cache"],
        parts=config["cache"]["parts"],
        crop=lambda wc: teacher_section(config, "distill", CACHE_TEACHER[wc.cache][0])["crop"],
        mirror=lambda wc: CACHE_TEACHER[wc.cache][1],
        rw="--random-weights" if config["teacher"]["random_weights"] else "",
    resources:
        **slurm_resources(config["resources"]["cache"]),
    conda:
        "../../envs/lipsim.yaml"
    log:
        f"{R}/logs/cache_fill/{{cache}}/part-{{part}}.log",
    benchmark:
        f"{R}/benchmarks/cache_fill/{{cache}}/part-{{part}}.tsv"
    shell:
        "python -m lipsim cache-fill --teacher {params.teacher} --weights-dir {params.weights} "
        "--images {params.images} --list {input.images} --part {wildcards.part} "
        "--parts {params.parts} --shard-size {params.c[shard_size]} --dtype {params.c[dtype]} "
        "--batch-size {params.c[batch_size]} --workers {params.c[workers]} "
        "--on-bad-image {params.c[on_bad_image]} --device {params.device} {params.rw} "
        "--crop {params.crop} {params.mirror} --out-dir {params.cache} > {log} 2>&1"


rule cache_index:
    input:
        images=cache_images,
        parts=expand(f"{R}/cache/{{{{cache}}}}/part-{{part}}.json", part=range(config["cache"]["parts"])),
    output:
        f"{R}/cache/{{cache}}/index.parquet",
    wildcard_constraints:
        cache=CACHE_RE,
    params:
        cache=lambda wc, output: os.path.dirname(output[0]),
        parts=config["cache"]["parts"],
    conda:
        "../../envs/lipsim.yaml"
    log:
        f"{R}/logs/cache_index/{{cache}}.log",
    shell:
        "python -m lipsim cache-index --cache-dir {params.cache} --parts {params.parts} "
        "--list {input.images} --out {output} > {log} 2>&1"


if PRETRAINED_SRC:

    rule import_pretrained:
        input:
            PRETRAINED_SRC,
        output:
            ckpt_path("pretrained"),
        params:
            teacher=TEACHER,
            preset=config["model"]["preset"],
            size=config["image_size"],
            emb_dim=teacher_emb_dim(),
        conda:
            "../../envs/lipsim.yaml"
        log:
            f"{R}/logs/import_pretrained.log",
        shell:
            "python -m lipsim import-checkpoint --src {input} --preset {params.preset} "
            "--image-size {params.size} --emb-dim {params.emb_dim} --stage pretrained "
            "--teacher {params.teacher} --out {output} > {log} 2>&1"


# One distillation per teacher of the sweep (the primary's is imported when
# pretrained_checkpoint is set): R/checkpoints/pretrained.pt, R/checkpoints/{teacher}/pretrained.pt.
rule distill:
    input:
        unpack(distill_inputs),
    output:
        f"{R}/checkpoints/{{model}}.pt",
    wildcard_constraints:
        model="|".join(re.escape(model_id(t, "pretrained")) for t in TRAINED_TEACHERS) or "(?!)",
    params:
        device=config["device"],
        teacher=lambda wc: model_teacher(wc.model)[0],
        caches=lambda wc: " ".join(
            f"--{k.replace('_', '-')} {d}" for k, d in distill_caches(model_teacher(wc.model)[0]).items()
        ),
        d=lambda wc: hparams("distill", model_teacher(wc.model)[0]),
        images=imagenet_dir(),
        preset=config["model"]["preset"],
        size=config["image_size"],
        launcher=distill_launcher(),
        workdir=lambda wc: f"{R}/train/{wc.model}",
    resources:
        **distill_resources(),
    conda:
        "../../envs/lipsim.yaml"
    log:
        f"{R}/logs/distill/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/distill/{{model}}.tsv"
    shell:
        "{params.launcher} {params.caches} --images {params.images} "
        "--preset {params.preset} --image-size {params.size} --epochs {params.d[epochs]} "
        "--batch-size {params.d[batch_size]} --lr {params.d[lr]} --beta1 {params.d[beta1]} "
        "--beta2 {params.d[beta2]} --weight-decay {params.d[weight_decay]} "
        "--schedule {params.d[schedule]} --warmup-steps {params.d[warmup_steps]} "
        "--seed {params.d[seed]} --workers {params.d[workers]} --amp {params.d[amp]} "
        "--ckpt-every {params.d[ckpt_every]} --device {params.device} --teacher {params.teacher} "
        "--crop {params.d[crop]} --teacher-view {params.d[teacher_view]} "
        "--rmse-reduction {params.d[rmse_reduction]} "
        "--jitter-input {params.d[jitter_input]} "
        "--lr-timing {params.d[lr_timing]} "
        "--schedule-items {params.d[schedule_items]} "
        "--partial-batches {params.d[partial_batches]} "
        "--workdir {params.workdir} --metrics {params.workdir}/metrics.csv "
        "--out {output} > {log} 2>&1"
