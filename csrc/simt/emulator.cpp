// The fiber scheduler behind csrc/simt/emulator.h: one ucontext fiber per CUDA thread, all on
// the calling OS thread; the next fiber to run is drawn at random from the runnable ones.
#include "emulator.h"

#include "../debug_alloc.h"
#include "../torch_api.h"
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace fastlstm::simt {
namespace {

constexpr size_t kStackBytes = 64 * 1024;  // kernels keep little on the stack
constexpr int kWarp = 32;
// A spin-wait that has yielded this often without the launch finishing waits for something
// that never comes (a grid barrier some block never reaches).
constexpr int64_t kMaxSpins = 20'000'000;

struct Fiber {
  ucontext_t context;
  ThreadIndex index;
  int block = 0;  // linear block index
  int tid = 0;    // linear thread index within the block
  bool done = false;
  bool spinning = false;  // yielded in a spin-wait, not yet resumed
};

struct Warp {
  int lanes = 0;  // threads in this warp (the last warp of a block may be partial)
  int arrived = 0;
  std::vector<int> waiting;
  uint64_t slot[kWarp] = {};
  uint32_t mma_a[kWarp][4] = {};  // each lane's A and B fragments of warp_mma_m16n8k16
  uint32_t mma_b[kWarp][2] = {};
};

// Per shared-memory byte: who touched it since the last barrier that orders the accesses.
// Threads of the owning block are ordered by its __syncthreads (epoch) or a cluster barrier;
// a thread of another block of the cluster (distributed shared memory) only by a cluster
// barrier (cepoch). A record holding such a remote access therefore outlives the owning
// block's __syncthreads.
struct Shadow {
  uint32_t epoch = 0;   // the owning block's barrier epoch; 0: untouched
  uint32_t cepoch = 0;  // its cluster's barrier epoch
  int32_t writer = -1;  // fibers (launch-wide indices)
  int32_t reader = -1;
  bool many_readers = false;
  bool remote = false;  // an access came from another block of the cluster
};

struct Block {
  int threads = 0;
  int arrived = 0;
  int finished = 0;  // threads that have exited
  uint32_t remote_epoch = 0;  // the cluster epoch of the last access from another block
  uint32_t epoch = 1;
  std::vector<int> waiting;
  std::vector<Warp> warps;
  std::vector<unsigned char> shared;
  std::vector<Shadow> shadow;
};

// The blocks of one thread-block cluster and their cluster barrier.
struct Cluster {
  int threads = 0;
  int arrived = 0;
  uint32_t epoch = 1;
  std::vector<int> waiting;
};

// Weak global memory (Options::weak_memory). The modelled memory is the debug allocator's
// buffers at launch (csrc/debug_alloc.h), laid end to end in one index space. `coherent` is the
// GPU's coherent memory (L2); each block has a `view` of it (what its loads see: its L1 and its
// own store buffer) and a `dirty` mark per byte it stored and has not yet released. Only the
// block whose fiber runs has its view in the buffers' real memory (`loaded`): when another
// block's fiber is scheduled, the bytes that differ from the loaded block's view are its new
// stores (captured into its view, marked dirty), and the other block's view is copied in.
// A release (flush) copies a block's dirty bytes to `coherent`; an acquire (refresh) copies
// `coherent` into its view where it has no pending store of its own.
struct WeakRegion {
  unsigned char* memory = nullptr;
  size_t bytes = 0;
  size_t offset = 0;  // in the index space, 8-byte aligned as the memory is
};
struct WeakMemory {
  bool on = false;
  std::vector<WeakRegion> regions;
  size_t total = 0;
  std::vector<unsigned char> coherent;
  std::vector<std::vector<unsigned char>> view;  // per block; empty until it first runs
  std::vector<std::vector<unsigned char>> dirty;
  int loaded = -1;  // whose view is in the real memory
};

struct Launch {
  WeakMemory weak;
  std::vector<Fiber> fibers;
  std::vector<Block> blocks;
  std::vector<Cluster> clusters;
  int cluster_blocks = 1;
  std::vector<int> runnable;
  ucontext_t scheduler;
  const std::function<void()>* body = nullptr;
  std::mt19937_64 rng;
  int current = -1;
  int64_t spins = 0;
  bool spun = false;  // the last fiber yielded in a spin-wait (weak memory: draw any block next)
  std::string error;  // first race or misuse found; the launch fails with it

  Fiber& fiber() { return fibers[current]; }
  Block& block() { return blocks[fiber().block]; }
  void fail(const std::string& what) {
    if (error.empty()) error = what;
  }
};

thread_local Launch* g_launch = nullptr;
Options g_options;
std::atomic<int64_t> g_launches{0};
std::atomic<int64_t> g_mmas{0};  // warp-level tensor-core products
std::atomic<int64_t> g_cluster_barriers{0};  // completed cluster barriers
std::atomic<int64_t> g_dsmem{0};  // accesses to another block's shared memory
std::atomic<int64_t> g_shared_read_bytes{0};   // bytes read from shared memory (any block's)
std::atomic<int64_t> g_shared_write_bytes{0};  // bytes written to shared memory
std::atomic<int64_t> g_shuffles{0};            // warp-level shuffles (one per warp exchange)

// Stacks are reused across launches on the same OS thread.
thread_local std::vector<std::unique_ptr<char[]>> g_stacks;

Launch& launch() {
  FASTLSTM_CHECK(g_launch != nullptr, "fastlstm: a CUDA device function ran outside an emulated "
              "kernel launch");
  return *g_launch;
}

// Back to the scheduler; `stay_runnable` puts this fiber back in the draw.
void yield(bool stay_runnable) {
  Launch& L = launch();
  if (stay_runnable) L.runnable.push_back(L.current);
  swapcontext(&L.fiber().context, &L.scheduler);
}

// A fiber cannot throw (nothing above it on its stack would catch), so a fatal finding is
// recorded and the fiber parks for good; the launch then fails with the recorded message.
void abort_fiber(const std::string& what) {
  launch().fail(what);
  yield(false);
}

void fiber_main() {
  Launch& L = *g_launch;
  (*L.body)();
  L.fiber().done = true;
  Block& b = L.block();
  // A block exits when its last thread does; another block's access to its shared memory must
  // be ordered before that by a cluster barrier (else it may land after the exit on a GPU).
  if (++b.finished == b.threads &&
      b.remote_epoch == L.clusters[L.fiber().block / L.cluster_blocks].epoch) {
    L.fail("fastlstm: emulated kernel: block " + std::to_string(L.fiber().block) + " exited "
           "while another block of its cluster accessed its shared memory after the last "
           "cluster barrier (distributed shared memory needs a cluster barrier before exit)");
  }
  // uc_link returns to the scheduler.
}

void release(std::vector<int>& waiting, std::vector<int>& runnable) {
  runnable.insert(runnable.end(), waiting.begin(), waiting.end());
  waiting.clear();
}

std::string describe_deadlock(const Launch& L) {
  std::ostringstream os;
  os << "fastlstm: emulated kernel deadlocked: no thread can run.";
  for (size_t b = 0; b < L.blocks.size(); ++b) {
    const Block& blk = L.blocks[b];
    int finished = 0;
    for (const Fiber& f : L.fibers) finished += (f.block == static_cast<int>(b) && f.done);
    if (blk.arrived > 0)
      os << " Block " << b << ": " << blk.arrived << " of " << blk.threads
         << " threads wait at __syncthreads, " << finished << " have exited.";
    const Cluster& c = L.clusters[b / L.cluster_blocks];
    if (b % L.cluster_blocks == 0 && c.arrived > 0)
      os << " Cluster of blocks " << b << ".." << b + L.cluster_blocks - 1 << ": " << c.arrived
         << " of " << c.threads << " threads wait at the cluster barrier.";
    for (size_t w = 0; w < blk.warps.size(); ++w)
      if (blk.warps[w].arrived > 0)
        os << " Block " << b << " warp " << w << ": " << blk.warps[w].arrived << " of "
           << blk.warps[w].lanes << " lanes wait at a warp exchange.";
  }
  return os.str();
}

// --- weak memory -------------------------------------------------------------------------

void weak_collect(void* data, size_t bytes, void* context) {
  auto& regions = *static_cast<std::vector<WeakRegion>*>(context);
  regions.push_back({static_cast<unsigned char*>(data), bytes, 0});
}

void weak_begin(Launch& L, size_t n_blocks) {
  WeakMemory& W = L.weak;
  if (!g_options.weak_memory || !debug_alloc_enabled()) return;
  debug_alloc::for_each_buffer(weak_collect, &W.regions);
  if (W.regions.empty()) return;
  std::sort(W.regions.begin(), W.regions.end(),
            [](const WeakRegion& a, const WeakRegion& b) { return a.memory < b.memory; });
  for (WeakRegion& r : W.regions) {
    const size_t align = reinterpret_cast<uintptr_t>(r.memory) % 8;
    W.total = (W.total + 7) / 8 * 8 + align;
    r.offset = W.total;
    W.total += r.bytes;
  }
  W.total = (W.total + 7) / 8 * 8;
  W.coherent.assign(W.total, 0);
  for (const WeakRegion& r : W.regions)
    std::memcpy(W.coherent.data() + r.offset, r.memory, r.bytes);
  W.view.resize(n_blocks);
  W.dirty.resize(n_blocks);
  W.on = true;
}

// The running block's stores since its view was loaded: into its view, marked pending.
void weak_capture(WeakMemory& W, int b) {
  unsigned char* view = W.view[b].data();
  unsigned char* dirty = W.dirty[b].data();
  constexpr size_t kChunk = 64;
  for (const WeakRegion& r : W.regions) {
    unsigned char* v = view + r.offset;
    for (size_t at = 0; at < r.bytes; at += kChunk) {
      const size_t n = std::min(kChunk, r.bytes - at);
      if (std::memcmp(r.memory + at, v + at, n) == 0) continue;
      for (size_t i = at; i < at + n; ++i) {
        if (r.memory[i] != v[i]) {
          v[i] = r.memory[i];
          dirty[r.offset + i] = 1;
        }
      }
    }
  }
}

void weak_store_view(WeakMemory& W, int b) {
  for (const WeakRegion& r : W.regions)
    std::memcpy(r.memory, W.view[b].data() + r.offset, r.bytes);
}

// Release: block b's pending stores reach the coherent memory, all of them, or (at a random
// flush point) each aligned 8-byte word of them with probability 1/2, so that other blocks
// may see them in any order.
void weak_flush(Launch& L, int b, bool all) {
  WeakMemory& W = L.weak;
  if (W.view[b].empty()) return;
  unsigned char* view = W.view[b].data();
  unsigned char* dirty = W.dirty[b].data();
  for (size_t w = 0; w < W.total; w += 8) {
    uint64_t any;
    std::memcpy(&any, dirty + w, 8);
    if (any == 0 || (!all && (L.rng() & 1))) continue;
    for (size_t i = w; i < w + 8; ++i) {
      if (dirty[i]) {
        W.coherent[i] = view[i];
        dirty[i] = 0;
      }
    }
  }
}

// Acquire: block b's view becomes the coherent memory, except where b has pending stores.
void weak_refresh(WeakMemory& W, int b) {
  if (W.view[b].empty()) return;
  unsigned char* view = W.view[b].data();
  const unsigned char* dirty = W.dirty[b].data();
  const unsigned char* coherent = W.coherent.data();
  // Runs of 8-byte words without a pending byte are copied whole.
  size_t run = 0;  // start of the current run of clean words
  for (size_t w = 0; w < W.total; w += 8) {
    uint64_t any;
    std::memcpy(&any, dirty + w, 8);
    if (any == 0) continue;
    std::memcpy(view + run, coherent + run, w - run);
    for (size_t i = w; i < w + 8; ++i)
      if (!dirty[i]) view[i] = coherent[i];
    run = w + 8;
  }
  std::memcpy(view + run, coherent + run, W.total - run);
  if (W.loaded == b) weak_store_view(W, b);
}

// Before a fiber of `block` runs: the loaded block's stores are captured (and, at random,
// partly released), and `block`'s view (at random refreshed first) goes into the memory.
void weak_switch_to(Launch& L, int block) {
  WeakMemory& W = L.weak;
  if (W.loaded == block) return;
  if (W.loaded >= 0) {
    weak_capture(W, W.loaded);
    if (L.rng() % 16 == 0) weak_flush(L, W.loaded, /*all=*/false);
  }
  if (W.view[block].empty()) {
    W.view[block] = W.coherent;
    W.dirty[block].assign(W.total, 0);
  } else if (L.rng() % 8 == 0) {
    weak_refresh(W, block);
  }
  W.loaded = block;
  weak_store_view(W, block);
}

// The launch's end: every store is released, and the memory holds the coherent values.
void weak_end(Launch& L) {
  WeakMemory& W = L.weak;
  if (!W.on) return;
  if (W.loaded >= 0) weak_capture(W, W.loaded);
  for (size_t b = 0; b < W.view.size(); ++b) weak_flush(L, static_cast<int>(b), /*all=*/true);
  for (const WeakRegion& r : W.regions)
    std::memcpy(r.memory, W.coherent.data() + r.offset, r.bytes);
  W.on = false;
}

// The index of [p, p + bytes) in the modelled memory, or -1.
int64_t weak_locate(const WeakMemory& W, const void* p, size_t bytes) {
  const auto* c = static_cast<const unsigned char*>(p);
  for (const WeakRegion& r : W.regions)
    if (c >= r.memory && c + bytes <= r.memory + r.bytes)
      return static_cast<int64_t>(r.offset + (c - r.memory));
  return -1;
}

}  // namespace

Options& options() { return g_options; }

void fence() {
  if (g_launch == nullptr || !g_launch->weak.on) return;
  Launch& L = *g_launch;
  const int b = L.fiber().block;
  weak_capture(L.weak, b);
  weak_flush(L, b, /*all=*/true);
  weak_refresh(L.weak, b);
}

namespace {
// An atomic access to [p, p + bytes) under weak memory: where those bytes lie in the modelled
// memory (at) and whose block accesses them; none outside weak memory, where the caller
// accesses p itself.
struct WeakAccess {
  WeakMemory* W;
  int64_t at;
  int block;
};
std::optional<WeakAccess> weak_access(const void* p, size_t bytes) {
  if (g_launch == nullptr || !g_launch->weak.on) return std::nullopt;
  const int64_t at = weak_locate(g_launch->weak, p, bytes);
  if (at < 0) return std::nullopt;
  return WeakAccess{&g_launch->weak, at, g_launch->fiber().block};
}
}  // namespace

bool weak_atomic_read(const void* p, size_t bytes, void* out) {
  const std::optional<WeakAccess> a = weak_access(p, bytes);
  if (!a) return false;
  WeakMemory& W = *a->W;
  // The block's own plain stores to these bytes come first (same-address order), and are
  // published with the atomic.
  const auto* memory = static_cast<const unsigned char*>(p);
  unsigned char* view = W.view[a->block].data() + a->at;
  unsigned char* dirty = W.dirty[a->block].data() + a->at;
  for (size_t i = 0; i < bytes; ++i) {
    if (memory[i] != view[i] || dirty[i]) {
      view[i] = memory[i];
      W.coherent[a->at + i] = memory[i];
      dirty[i] = 0;
    }
  }
  std::memcpy(out, W.coherent.data() + a->at, bytes);
  return true;
}

bool weak_atomic_write(void* p, size_t bytes, const void* value) {
  const std::optional<WeakAccess> a = weak_access(p, bytes);
  if (!a) return false;
  WeakMemory& W = *a->W;
  std::memcpy(W.coherent.data() + a->at, value, bytes);
  std::memcpy(W.view[a->block].data() + a->at, value, bytes);
  std::memset(W.dirty[a->block].data() + a->at, 0, bytes);
  std::memcpy(p, value, bytes);
  return true;
}

std::pair<Tensor, Tensor> sort_descending(const Tensor& keys, bool stable) {
  auto [sorted, order] = call_op<2>("aten::sort", "stable", keys, std::optional<bool>(stable),
                                    /*dim=*/int64_t{0}, /*descending=*/true);
  if (stable) return {sorted, order};
  // Shuffle each run of equal keys (the keys stay sorted; their indices move).
  const int64_t n = sorted.numel();
  const int64_t* key = static_cast<const int64_t*>(sorted.const_data_ptr());
  int64_t* index = static_cast<int64_t*>(order.mutable_data_ptr());
  std::mt19937_64 rng(g_options.seed * 0xD1B54A32D192ED03ull + 1);
  for (int64_t begin = 0; begin < n;) {
    int64_t end = begin + 1;
    while (end < n && key[end] == key[begin]) ++end;
    std::shuffle(index + begin, index + end, rng);
    begin = end;
  }
  return {sorted, order};
}
int64_t launch_count() { return g_launches.load(); }
int64_t mma_count() { return g_mmas.load(); }
int64_t cluster_barrier_count() { return g_cluster_barriers.load(); }
int64_t dsmem_access_count() { return g_dsmem.load(); }
int64_t shared_read_bytes() { return g_shared_read_bytes.load(); }
int64_t shared_write_bytes() { return g_shared_write_bytes.load(); }
int64_t shuffle_count() { return g_shuffles.load(); }

void run_grid(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body,
              int cluster_blocks, bool co_resident) {
  FASTLSTM_CHECK(g_launch == nullptr, "fastlstm: emulated kernels cannot launch kernels");
  const int64_t n_blocks = int64_t(grid.x) * grid.y * grid.z;
  const int64_t per_block = int64_t(block.x) * block.y * block.z;
  FASTLSTM_CHECK(per_block >= 1 && per_block <= 1024, "fastlstm: emulated launch: block must have "
              "1 to 1024 threads, got ", per_block);
  FASTLSTM_CHECK(n_blocks >= 1 && n_blocks * per_block <= 65536, "fastlstm: emulated launch: grid "
              "must have 1 to 65536 threads in all (emulation runs small grids), got ",
              n_blocks, " blocks of ", per_block);
  FASTLSTM_CHECK(cluster_blocks >= 1 && n_blocks % cluster_blocks == 0, "fastlstm: emulated "
                 "launch: the grid's ", n_blocks, " blocks must divide into clusters of ",
                 cluster_blocks);
  // As a GPU refuses the launch: dynamic + static shared memory must fit a block's.
  FASTLSTM_CHECK(static_cast<int64_t>(shared_bytes) + g_options.static_shared_bytes <=
                     g_options.shared_bytes_per_block,
                 "fastlstm: emulated launch: ", shared_bytes, " bytes of dynamic shared memory "
                 "per block asked for, the emulated device has ",
                 g_options.shared_bytes_per_block, ", of which the kernel's static shared "
                 "memory takes ", g_options.static_shared_bytes);
  ++g_launches;

  Launch L;
  L.body = &body;
  L.cluster_blocks = cluster_blocks;
  L.clusters.resize(n_blocks / cluster_blocks);
  for (Cluster& c : L.clusters) c.threads = static_cast<int>(cluster_blocks * per_block);
  L.rng.seed(g_options.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(g_launches.load()));
  L.blocks.resize(n_blocks);
  for (Block& b : L.blocks) {
    b.threads = static_cast<int>(per_block);
    b.warps.resize((per_block + kWarp - 1) / kWarp);
    for (size_t w = 0; w < b.warps.size(); ++w)
      b.warps[w].lanes = static_cast<int>(std::min<int64_t>(kWarp, per_block - w * kWarp));
    // All ones: NaN in every floating type, so that a product that reads shared memory nobody
    // wrote (a row's padding, say) gives NaN even where the other operand is zero there.
    b.shared.assign(shared_bytes, 0xFF);
    if (g_options.race_check) b.shadow.assign(shared_bytes, Shadow{});
  }
  const size_t n = static_cast<size_t>(n_blocks * per_block);
  while (g_stacks.size() < n) g_stacks.emplace_back(new char[kStackBytes]);
  L.fibers.resize(n);
  for (size_t i = 0; i < n; ++i) {
    Fiber& f = L.fibers[i];
    const int64_t b = static_cast<int64_t>(i) / per_block, t = static_cast<int64_t>(i) % per_block;
    f.block = static_cast<int>(b);
    f.tid = static_cast<int>(t);
    f.index.block_dim = block;
    f.index.grid_dim = grid;
    f.index.thread = {static_cast<unsigned>(t % block.x),
                      static_cast<unsigned>(t / block.x % block.y),
                      static_cast<unsigned>(t / (int64_t(block.x) * block.y))};
    f.index.block = {static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                     static_cast<unsigned>(b / (int64_t(grid.x) * grid.y))};
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = g_stacks[i].get();
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = &L.scheduler;
    makecontext(&f.context, fiber_main, 0);
    L.runnable.push_back(static_cast<int>(i));
  }

  if (co_resident) weak_begin(L, static_cast<size_t>(n_blocks));
  g_launch = &L;
  size_t finished = 0;
  std::string deadlock;
  while (finished < n) {
    if (L.runnable.empty()) {
      deadlock = describe_deadlock(L);
      break;
    }
    size_t k = L.rng() % L.runnable.size();
    // Weak memory: each switch between blocks copies views, so a block runs on while it has a
    // runnable thread, except at 1 draw in 16; a spin-wait hands over to a thread of any block
    // that is not spinning itself, where there is one (spinners wait for those).
    if (L.weak.on && L.weak.loaded >= 0) {
      const bool any_block = L.spun || L.rng() % 16 == 0;
      for (size_t i = 0; i < L.runnable.size(); ++i) {
        const size_t j = (k + i) % L.runnable.size();
        const Fiber& f = L.fibers[L.runnable[j]];
        if (L.spun ? !f.spinning : (!any_block && f.block == L.weak.loaded)) {
          k = j;
          break;
        }
      }
    }
    L.spun = false;
    L.current = L.runnable[k];
    L.runnable[k] = L.runnable.back();
    L.runnable.pop_back();
    if (L.weak.on) weak_switch_to(L, L.fiber().block);
    swapcontext(&L.scheduler, &L.fiber().context);
    if (L.fiber().done) ++finished;
    if (L.spins > kMaxSpins) {
      deadlock = "fastlstm: emulated kernel spun " + std::to_string(L.spins) +
                 " times without finishing: a spin-wait (grid barrier?) is never satisfied";
      break;
    }
  }
  g_launch = nullptr;
  weak_end(L);
  FASTLSTM_CHECK(L.error.empty(), L.error);
  FASTLSTM_CHECK(deadlock.empty(), deadlock);
  if (debug_alloc_enabled())
    debug_alloc::check_guards(("emulated kernel launch #" + std::to_string(g_launches.load()) +
                               " (" + std::to_string(n_blocks) + " blocks of " +
                               std::to_string(per_block) + " threads)").c_str());
}

const ThreadIndex& current_index() { return launch().fiber().index; }

void syncthreads() {
  Launch& L = launch();
  Block& b = L.block();
  if (++b.arrived == b.threads) {
    b.arrived = 0;
    ++b.epoch;  // accesses before and after this barrier are ordered
    release(b.waiting, L.runnable);
    yield(true);
  } else {
    b.waiting.push_back(L.current);
    yield(false);
  }
}

// Every thread of every block in the calling thread's cluster arrives before any leaves; like
// __syncthreads, it orders each block's shared-memory accesses.
void cluster_sync() {
  Launch& L = launch();
  const int first = L.fiber().block / L.cluster_blocks * L.cluster_blocks;
  Cluster& c = L.clusters[first / L.cluster_blocks];
  if (++c.arrived == c.threads) {
    c.arrived = 0;
    ++g_cluster_barriers;
    ++c.epoch;
    for (int b = first; b < first + L.cluster_blocks; ++b) ++L.blocks[b].epoch;
    if (L.weak.on) {  // barrier.cluster.arrive.release / wait.acquire: every block's stores
      weak_capture(L.weak, L.weak.loaded);
      for (int b = first; b < first + L.cluster_blocks; ++b) weak_flush(L, b, /*all=*/true);
      for (int b = first; b < first + L.cluster_blocks; ++b) weak_refresh(L.weak, b);
    }
    release(c.waiting, L.runnable);
    yield(true);
  } else {
    c.waiting.push_back(L.current);
    yield(false);
  }
}

// Every lane of the calling warp arrives before any leaves.
void syncwarp() {
  Launch& L = launch();
  Warp& w = L.block().warps[L.fiber().tid / kWarp];
  if (++w.arrived == w.lanes) {
    w.arrived = 0;
    release(w.waiting, L.runnable);
    yield(true);
  } else {
    w.waiting.push_back(L.current);
    yield(false);
  }
}

uint64_t warp_exchange(uint64_t value, int src_lane) {
  Launch& L = launch();
  const int tid = L.fiber().tid;
  Warp& w = L.block().warps[tid / kWarp];
  if (tid % kWarp == 0) ++g_shuffles;
  w.slot[tid % kWarp] = value;
  syncwarp();  // every lane has stored
  const uint64_t r = src_lane >= 0 && src_lane < w.lanes ? w.slot[src_lane] : value;
  syncwarp();  // every lane has read before the slots are reused
  return r;
}

namespace {
// One 16-bit element of a packed pair (low half first) as a float.
float unpack16(uint32_t pair, int half, bool bf16) {
  const uint32_t h = (pair >> (16 * half)) & 0xffffu;
  uint32_t bits;
  if (bf16) {
    bits = h << 16;
  } else {  // IEEE binary16
    const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1fu) {
      bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
      bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
      bits = sign;
    } else {  // subnormal: exactly man * 2^-24
      float v = std::ldexp(static_cast<float>(man), -24);
      std::memcpy(&bits, &v, 4);
      bits |= sign;
    }
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// The calling warp once every lane has put in its A and B fragments of a tensor-core product
// (counted once per warp); lane: the caller's.
Warp& gather_mma_fragments(const uint32_t a[4], const uint32_t b[2], int& lane) {
  Launch& L = launch();
  const int tid = L.fiber().tid;
  Warp& w = L.block().warps[tid / kWarp];
  if (w.lanes != kWarp) abort_fiber("fastlstm: emulated mma needs a full warp of 32 threads");
  lane = tid % kWarp;
  if (lane == 0) ++g_mmas;
  std::memcpy(w.mma_a[lane], a, sizeof(w.mma_a[lane]));
  std::memcpy(w.mma_b[lane], b, sizeof(w.mma_b[lane]));
  syncwarp();  // every lane's fragments are in
  return w;
}
}  // namespace

void warp_mma_m16n8k16(const uint32_t a[4], const uint32_t b[2], float d[4], bool bf16) {
  int lane = 0;
  const Warp& w = gather_mma_fragments(a, b, lane);
  // The PTX fragment layout of m16n8k16 (f16/bf16 inputs, f32 accumulators), with
  // group = lane / 4 and pos = lane % 4:
  //   A (16 x 16, row): a[r] holds row group + 8 * (r & 1), columns 2 * pos + 8 * (r >> 1)
  //                     and the next one (low half first);
  //   B (16 x 8, col):  b[r] holds rows 2 * pos + 8 * r and the next one, column group;
  //   C/D (16 x 8):     d[i] is row group + 8 * (i >> 1), column 2 * pos + (i & 1).
  const int group = lane / 4, pos = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = group + 8 * (i >> 1), col = 2 * pos + (i & 1);
    float acc = d[i];
    for (int k = 0; k < 16; ++k) {
      const int a_lane = 4 * (row % 8) + (k % 8) / 2, a_reg = (row / 8) + 2 * (k / 8);
      const int b_lane = 4 * col + (k % 8) / 2, b_reg = k / 8;
      acc += unpack16(w.mma_a[a_lane][a_reg], k & 1, bf16) *
             unpack16(w.mma_b[b_lane][b_reg], k & 1, bf16);
    }
    d[i] = acc;
  }
  syncwarp();  // every lane has read the fragments before they are reused
}

void warp_mma_m16n8k8_tf32(const uint32_t a[4], const uint32_t b[2], float d[4]) {
  int lane = 0;
  const Warp& w = gather_mma_fragments(a, b, lane);
  // The PTX fragment layout of m16n8k8 with .tf32 inputs, group = lane / 4, pos = lane % 4:
  //   A (16 x 8, row): a[r] holds row group + 8 * (r & 1), column pos + 4 * (r >> 1);
  //   B (8 x 8, col):  b[r] holds row pos + 4 * r, column group;
  //   C/D (16 x 8):    d[i] is row group + 8 * (i >> 1), column 2 * pos + (i & 1).
  // The tensor core reads the TF32 part of each operand: sign, exponent, 10 mantissa bits.
  const auto tf32 = [](uint32_t bits) {
    bits &= ~0x1fffu;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  };
  const int group = lane / 4, pos = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = group + 8 * (i >> 1), col = 2 * pos + (i & 1);
    float acc = d[i];
    for (int k = 0; k < 8; ++k) {
      const int a_lane = 4 * (row % 8) + k % 4, a_reg = row / 8 + 2 * (k / 4);
      const int b_lane = 4 * col + k % 4, b_reg = k / 4;
      acc += tf32(w.mma_a[a_lane][a_reg]) * tf32(w.mma_b[b_lane][b_reg]);
    }
    d[i] = acc;
  }
  syncwarp();  // every lane has read the fragments before they are reused
}

void spin_pause() {
  Launch& L = launch();
  ++L.spins;
  L.spun = true;
  Fiber& me = L.fiber();
  me.spinning = true;
  yield(true);
  me.spinning = false;
}

int current_block() { return launch().fiber().block; }

int cluster_block(int rank) {
  Launch& L = launch();
  if (rank < 0 || rank >= L.cluster_blocks) {
    abort_fiber("fastlstm: emulated kernel mapped the shared memory of rank " +
                std::to_string(rank) + " in a cluster of " + std::to_string(L.cluster_blocks) +
                " blocks");
  }
  return L.fiber().block / L.cluster_blocks * L.cluster_blocks + rank;
}

void* shared_base(int block) {
  Block& b = launch().blocks[block];
  if (b.shared.empty())
    abort_fiber("fastlstm: emulated kernel uses dynamic shared memory but was launched with 0 "
                "bytes of it");
  return b.shared.data();
}

namespace {
std::string who(const Launch& L, int fiber) {
  return "block " + std::to_string(L.fibers[fiber].block) + " thread " +
         std::to_string(L.fibers[fiber].tid);
}
}  // namespace

void record_shared_access(int target, const void* p, size_t bytes, bool write) {
  Launch& L = launch();
  Block& b = L.blocks[target];
  const auto* c = static_cast<const unsigned char*>(p);
  const auto* base = b.shared.data();
  if (c < base || c + bytes > base + b.shared.size()) {
    abort_fiber("fastlstm: emulated kernel accessed shared memory out of bounds: byte " +
                std::to_string(c - base) + " of block " + std::to_string(target) + "'s " +
                std::to_string(b.shared.size()) + "-byte buffer");
  }
  // As a GPU, which faults on a misaligned shared-memory access (a 4-byte load of two 16-bit
  // values at an odd element, say).
  if ((c - base) % bytes != 0) {
    abort_fiber("fastlstm: emulated kernel: misaligned " + std::to_string(bytes) + "-byte "
                "shared-memory access at byte " + std::to_string(c - base) + " of block " +
                std::to_string(target));
  }
  (write ? g_shared_write_bytes : g_shared_read_bytes) += static_cast<int64_t>(bytes);
  Cluster& cluster = L.clusters[target / L.cluster_blocks];
  const bool remote = target != L.fiber().block;
  if (remote) {
    ++g_dsmem;
    // Another block may not have started until a cluster barrier shows that every block of
    // the cluster runs (CUDA's rule for distributed shared memory).
    if (cluster.epoch == 1)
      abort_fiber("fastlstm: emulated kernel: " + who(L, L.current) + " accessed the shared "
                  "memory of block " + std::to_string(target) + " before a cluster barrier "
                  "showed that every block of the cluster has started");
    if (b.finished == b.threads)
      abort_fiber("fastlstm: emulated kernel: " + who(L, L.current) + " accessed the shared "
                  "memory of block " + std::to_string(target) + " after that block exited "
                  "(distributed shared memory needs a cluster barrier before exit)");
    b.remote_epoch = cluster.epoch;  // the owner must not exit before the next cluster barrier
  }
  if (g_options.race_check) {
    const int me = L.current;
    const uint32_t cepoch = cluster.epoch;
    for (size_t i = 0; i < bytes; ++i) {
      const size_t at = static_cast<size_t>(c - base) + i;
      Shadow& s = b.shadow[at];
      // A new barrier epoch forgets the record, unless a remote access in it still waits for
      // a cluster barrier (or this access is remote: the block's __syncthreads orders nothing
      // for it).
      if (s.cepoch != cepoch || (!remote && !s.remote && s.epoch != b.epoch))
        s = Shadow{b.epoch, cepoch, -1, -1, false, false};
      const bool other_wrote = s.writer >= 0 && s.writer != me;
      const bool other_read = s.reader >= 0 && (s.reader != me || s.many_readers);
      if (other_wrote || (write && other_read)) {
        const int other = other_wrote ? s.writer : s.reader;
        const char* verb = other_wrote ? " wrote" : " read";
        std::ostringstream os;
        if (!remote && !s.remote) {
          os << "fastlstm: shared-memory race in block " << target << " at byte " << at
             << ": thread " << L.fiber().tid << (write ? " writes" : " reads") << " what thread "
             << L.fibers[other].tid << verb << " with no __syncthreads between them";
        } else {
          os << "fastlstm: distributed shared-memory race on block " << target
             << "'s shared memory at byte " << at << ": " << who(L, me)
             << (write ? " writes" : " reads") << " what " << who(L, other) << verb
             << " with no cluster barrier between them";
        }
        L.fail(os.str());
      }
      s.remote = s.remote || remote;
      if (write) {
        s.writer = me;
      } else if (s.reader < 0) {
        s.reader = me;
      } else if (s.reader != me) {
        s.many_readers = true;
      }
    }
  }
  // Switch fibers now and then, so that unordered accesses interleave differently per seed.
  if (g_options.preempt && (L.rng() & 3) == 0) yield(true);
}

}  // namespace fastlstm::simt
