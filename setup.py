from setuptools import find_packages, setup

setup(
    name="csnln",
    version="0.1.0",
    description="CSNLN super-resolution (Mei et al., CVPR 2020) with fused Triton attention kernels",
    packages=find_packages(include=["csnln", "csnln.*", "kernels", "kernels.*"]),
    package_data={"csnln": ["default_config.yaml", "weights/*.pt", "weights/*.md", "weights/*.png"]},
    entry_points={"console_scripts": ["csnln-eval = csnln.eval_command:main"]},
    python_requires=">=3.9",
    install_requires=[
        "torch>=2.4",
        "triton>=3.0; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "numpy",
        "matplotlib>=3.6",
        "imageio",
        "pyyaml",
        "tqdm",
    ],
    license="MIT",
    extras_require={"tensorboard": ["tensorboard"], "export": ["onnx", "onnxruntime"],
                    "test": ["pytest", "pytest-benchmark", "tensorboard", "onnx", "onnxruntime"]},
)
