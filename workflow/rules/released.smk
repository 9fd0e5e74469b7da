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
        id=lambda wc: RELEASED["ids"][released_key(wc.model)],
        url=f"--url {RELEASED['url']}" if RELEASED["url"] else "",
        sha=released_option("sha256", "sha256"),
        retries=RELEASED["retries"],
        timeout=RELEASED["timeout"],
    shell:
        "python -m lipsim fetch-released --id {params.id} {params.url} {params.sha} "
        "--out {output.ckpt} --record {output.record} --retries {params.retries} "
        "--timeout {params.timeout} --no-progress > {log} 2>&1"
