"""The parity subset that CI runs with the built wheel in each clean venv
(`pytest tests --wheel-subset`, from scripts/ci_wheel.sh), while `make test` runs the whole
suite once. It touches every op, dtype and path once against nn.LSTM: forward, backward,
inference, float32/float64/bfloat16/float16, packed input, torch.compile, torch.func, the
emulated CUDA kernels (per-step, persistent, cluster, device schedule), bad input's
exceptions, DDP, and the stable-ABI library checks.

Each entry: (test file, regex that the test's name, parameters included, must match from its
start; None for every test of the file). An entry that selects nothing fails the run
(tests/conftest.py), so the subset cannot silently shrink when a test is renamed.
"""

# The entries that --wheel-subset-core leaves out: the emulated CUDA kernels, and the CPU
# kernels' own numerics (packed GEMM panels, 16-bit arithmetic), which reach torch only through
# raw data pointers. The +cu12 wheel's CPU and emulator objects are the +cu13 wheel's own
# (setup.py shares them), and the torch 2.11 venv runs these entries on them already; the +cu12
# venv keeps what depends on its torch: the ops, their registrations, dispatch and autograd.
EMULATOR_FILES = ("test_simt.py", "test_emulated_cuda.py", "test_emulated_device_lengths.py",
                  "test_emulated_persistent.py")
SHARED_OBJECT_FILES = EMULATOR_FILES + ("test_cpu_packed_gemm.py", "test_half_cpu.py")

WHEEL_SUBSET = [
    # CPU parity over the core grid, flags, float32, odd sizes, non-contiguous input (not the
    # 70,000-step and thread-splitting sizes, which cost most of the file's time)
    ("test_parity.py", r"(?!test_long_sequence|test_sizes_that_split)"),
    ("test_inference.py", r"(?!test_parity_many_chunks)"),
    ("test_half_cpu.py", None),
    ("test_half_cell_state.py", None),
    ("test_cpu_packed_gemm.py", None),
    # each layer's rows split across threads, or one group per direction
    ("test_cpu_partition.py", r"test_training_parity_per_partition\[1-True-3-random-3-rows"
                              r"|test_inference_parity_per_partition\[True-0-rows-3"
                              r"|test_default_is_rows"),
    ("test_cell_math.py", r"test_cell_sweep_float64_against_nn_lstm|test_float32_scaled"),
    ("test_training_memory.py", None),
    ("test_reference.py", None),
    ("test_lengths_helpers.py", None),
    # the library and its ops on this torch: stable ABI, schemas, fake/autograd registrations
    ("test_stable_abi.py", None),
    # glibc floor, the CUDA libraries linked, the import-time CUDA-major check
    ("test_wheels.py", None),
    ("test_ops.py", r"test_gradcheck_op|test_op_matches_nn_lstm|test_opcheck_|test_compile_aot_eager"
                    r"|test_compile_inference_fullgraph|test_forward_is_deterministic"),
    # what nn.LSTM raises, on this torch's dispatcher
    ("test_bad_input.py", None),
    ("test_nn_compat.py", None),
    # packed input and torch.compile
    ("test_packed_fast_path.py", None),
    ("test_compile_lengths.py", r"test_first_call_compiles|test_tensor_lengths"),
    # torch.func and second derivatives
    ("test_func_transforms.py", r"test_grad_and_vjp|test_jvp_matches|test_vmap_and_per_example"),
    ("test_double_backward.py", r"test_double_backward_matches_nn_lstm"),
    # the CUDA kernels, emulated on the CPU
    ("test_simt.py", None),
    ("test_emulated_cuda.py", None),
    ("test_emulated_device_lengths.py", r"test_device_schedule_matches_the_host_schedule"
                                        r"|test_device_schedule_on_thread_block_clusters"),
    ("test_emulated_persistent.py", r"test_persistent_path_runs_the_loop_in_one_launch"
                                    r"|test_cluster_half_precision_on_tensor_cores"
                                    r"|test_weights_from_global_memory"
                                    r"|test_few_multiprocessors"),
    # distributed and export
    ("test_ddp.py", None),
    ("test_onnx.py", r"test_export_frozen_model_uses_inference_op"),
]
