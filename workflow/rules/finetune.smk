# Step 2: finetuning on NIGHT with the hinge loss, one job per teacher and margin (or imported
# checkpoints). Model ids: margin0.5 (primary teacher), {teacher}/margin0.5 (the others),
# margin0.5-hinge_sound-cosine (an objective of study.objectives).


rule finetune:
    input:
        unpack(night_inputs),
        init=lambda wc: ckpt_path(model_id(model_teacher(wc.model)[0], "pretrained")),
    output:
        f"{R}/checkpoints/{{model}}.pt",
    wildcard_constraints:
        model=rf"{teacher_prefix_re(OTHER_TEACHERS)}margin\d+(\.\d+)?{OBJECTIVE_RE}",
    params:
        device=config["device"],
        f=lambda wc: finetune_hparams(wc.model),
        margin=lambda wc: model_teacher(wc.model)[1][len("margin") :].partition("-")[0],
        metric=lambda wc: model_objective(wc.model)[1],
        min_votes=config["night"]["min_votes"],
        workdir=lambda wc: f"{R}/train/{wc.model}",
    resources:
        **slurm_resources(config["finetune"]["resources"]),
    conda:
        "../../envs/lipsim.yaml"
    log:
        f"{R}/logs/finetune/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/finetune/{{model}}.tsv"
    shell:
        "python -m lipsim finetune --init {input.init} --night {input.night} --margin {params.margin} "
        "--epochs {params.f[epochs]} --batch-size {params.f[batch_size]} --lr {params.f[lr]} "
        "--beta1 {params.f[beta1]} --beta2 {params.f[beta2]} "
        "--weight-decay {params.f[weight_decay]} --schedule {params.f[schedule]} "
        "--warmup-steps {params.f[warmup_steps]} --metric {params.metric} --loss {params.f[loss]} "
        "--lr-timing {params.f[lr_timing]} "
        "--schedule-items {params.f[schedule_items]} "
        "--partial-batches {params.f[partial_batches]} "
        "--loss-reduction {params.f[loss_reduction]} --optimizer-state {params.f[optimizer_state]} "
        "--seed {params.f[seed]} --workers {params.f[workers]} --amp {params.f[amp]} "
        "--ckpt-every {params.f[ckpt_every]} --device {params.device} "
        "--min-votes {params.min_votes} --workdir {params.workdir} "
        "--metrics {params.workdir}/metrics.csv --out {output} > {log} 2>&1"


if IMPORTED:

    ruleorder: import_finetuned > finetune

    rule import_finetuned:
        input:
            lambda wc: IMPORTED[wc.margin],
        output:
            ckpt_path("margin{margin}"),
        wildcard_constraints:
            margin="|".join(re.escape(m) for m in IMPORTED),
        params:
            teacher=TEACHER,
            preset=config["model"]["preset"],
            size=config["image_size"],
            emb_dim=teacher_emb_dim(),
            # The authors finetuned with their metric, 1 - cos (docs/method.md section 11).
            metric="cosine",
        conda:
            "../../envs/lipsim.yaml"
        log:
            f"{R}/logs/import_finetuned/margin{{margin}}.log",
        shell:
            "python -m lipsim import-checkpoint --src {input} --preset {params.preset} "
            "--image-size {params.size} --emb-dim {params.emb_dim} --stage finetuned "
            "--margin {wildcards.margin} --metric {params.metric} --teacher {params.teacher} "
            "--out {output} > {log} 2>&1"
