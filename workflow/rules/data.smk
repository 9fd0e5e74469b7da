# Data: NIGHT (generated or downloaded), the distillation image folder, natural images, weights.

if config["night"]["source"] == "generate":

    rule make_demo_night:
        output:
            directory(f"{R}/data/night"),
        log:
            f"{R}/logs/make_demo_night.log",
        conda:
            "../../envs/lipsim.yaml"
        params:
            opts=options("make-demo-night"),
        shell:
            "python -m lipsim make-demo-night {params.opts} --out {output} > {log} 2>&1"

elif config["night"]["source"] == "download":

    # A localrule: it needs the network, which login nodes have and compute nodes may not.
    localrules:
        download_night,

    rule download_night:
        output:
            directory(f"{R}/data/night"),
        log:
            f"{R}/logs/download_night.log",
        conda:
            "../../envs/lipsim.yaml"
        params:
            opts=options("download-night"),
            # --url is the zip's or the chunked variant's, by mode
            url=config["night"]["download"][
                "url" if config["night"]["download"]["mode"] == "zip" else "chunked_url"
            ],
        shell:
            "python -m lipsim download-night {params.opts} --url {params.url} --out {output} "
            "> {log} 2>&1"


rule verify_night:
    input:
        generated(night_dir()),
    output:
        f"{R}/checks/night-verified.json",
    log:
        f"{R}/logs/verify_night.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        opts=options("verify-night"),
        root=lambda wc, input: input[0] if input else night_dir(),
    shell:
        "python -m lipsim verify-night {params.opts} --root {params.root} --report {output} "
        "> {log} 2>&1"


if config["imagenet"]["source"] == "generate":

    rule make_demo_imagenet:
        output:
            directory(f"{R}/data/imagenet"),
        log:
            f"{R}/logs/make_demo_imagenet.log",
        conda:
            "../../envs/lipsim.yaml"
        params:
            opts=options("make-demo-images", section="imagenet.generate"),
        shell:
            "python -m lipsim make-demo-images {params.opts} --layout imagenet --out {output} "
            "> {log} 2>&1"


if config["natural_images"]["source"] == "generate":

    rule make_demo_natural:
        output:
            directory(f"{R}/data/natural"),
        log:
            f"{R}/logs/make_demo_natural.log",
        conda:
            "../../envs/lipsim.yaml"
        params:
            opts=options("make-demo-images", section="natural_images.generate"),
        shell:
            "python -m lipsim make-demo-images {params.opts} --layout flat --out {output} "
            "> {log} 2>&1"


rule check_imagenet:
    input:
        generated(imagenet_dir()),
    output:
        f"{R}/checks/imagenet.json",
    log:
        f"{R}/logs/check_imagenet.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        root=lambda wc, input: input[0] if input else imagenet_dir(),
        expect=lambda wc: (
            config["imagenet"]["expect_classes"]
            if config["imagenet"]["source"] == "path"
            else config["imagenet"]["generate"]["classes"]
        ),
    shell:
        "python -m lipsim check-folder --layout imagenet --root {params.root} "
        "--expect-classes {params.expect} --report {output} > {log} 2>&1"


rule check_natural:
    input:
        generated(natural_dir()),
    output:
        f"{R}/checks/natural.json",
    log:
        f"{R}/logs/check_natural.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        root=lambda wc, input: input[0] if input else natural_dir(),
    shell:
        "python -m lipsim check-folder --layout flat --root {params.root} --report {output} > {log} 2>&1"


# Weights are fetched once, where the network is (login node), before cluster jobs start.
localrules:
    fetch_weights,


rule fetch_weights:
    output:
        f"{config['weights_dir']}/{{name}}.json",
    log:
        f"{R}/logs/fetch_weights/{{name}}.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        weights=lambda wc, output: os.path.dirname(output[0]),
    shell:
        "python -m lipsim fetch-weights --teacher {wildcards.name} --weights-dir {params.weights} "
        "--marker {output} > {log} 2>&1"
