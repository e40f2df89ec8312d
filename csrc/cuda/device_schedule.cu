// The device-built step schedule for the GPU (csrc/cuda/device_schedule.cuh).
#include "device_schedule.cuh"
