# The authors' released LipSim-DreamSim checkpoints: fetched from Google Drive when
# pretrained_checkpoint or a finetuned_checkpoints value is 'released' (rules/common.smk maps
# those to released_path), then imported by import_pretrained / import_finetuned.


# The download needs the network (login node); the import runs anywhere.
localrules:
    fetch_released,


rule fetch_released:
    output:
        ckpt=f"{R}/released-checkpoints/{{model}}.pth",
        record=f"{R}/released-checkpoints/{{model}}.json",
    log:
        f"{R}/logs/fetch_released/{{model}}.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        opts=options("fetch-released"),
        id=lambda wc: RELEASED["ids"][released_key(wc.model)],
        sha=released_option("sha256", "sha256"),
    shell:
        "python -m lipsim fetch-released {params.opts} --id {params.id} {params.sha} "
        "--out {output.ckpt} --record {output.record} --no-progress > {log} 2>&1"
