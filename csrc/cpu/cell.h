// Fused LSTM cell math on the CPU: the pointwise part of one time step, over `rows` rows.
// Gate order is nn.LSTM's: i, f, g, o.
#pragma once

#include <cstdint>

#include "../lstm.h"

namespace fastlstm::cpu {

// gates [rows, 4H]: in, pre-activations without bias; out, activations i, f, g, o where
// keep_gates (training), else left as they came (inference).
// bias [4H] (b_ih + b_hh) or nullptr. c_out [rows, H]. h_out [rows, H] = o * tanh(c).
template <typename scalar_t>
void cell_forward(int64_t rows, int64_t H, scalar_t* gates, const scalar_t* bias,
                  PrevCell<scalar_t> c_prev, scalar_t* c_out, scalar_t* h_out,
                  bool keep_gates = true);

// gates [rows, 4H] activations and c [rows, H] from the forward; dh [rows, H] gradient of h_t;
// dc [rows, H]: in, gradient of c_t from step t+1 (or c_n); out, gradient of c_{t-1}.
// dgates [rows, 4H] out: gradient of the gate pre-activations.
template <typename scalar_t>
void cell_backward(int64_t rows, int64_t H, const scalar_t* gates, const scalar_t* c,
                   PrevCell<scalar_t> c_prev, const scalar_t* dh, scalar_t* dc, scalar_t* dgates);

}  // namespace fastlstm::cpu
