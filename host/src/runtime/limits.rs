//! Engine settings and the pooling allocator's sizing, with the reasoning for each.
//!
//! Figures from `shared/PERFORMANCE.md` (measured on this kind of machine): with memories and
//! tables kept resident and `PAGEMAP_SCAN` resetting only the pages a guest dirtied, a fresh
//! instance per request costs ~12 µs instead of ~30 µs, with isolation unchanged.

use wasmtime::{Config, Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Largest linear memory one instance may grow to.
pub const MAX_MEMORY: usize = 64 << 20;
/// Instances alive at once across all plugins; the pool reserves (virtual) slots for each.
pub const MAX_INSTANCES: u32 = 1000;
/// Resident bytes kept per memory and table slot between instances, instead of handing the
/// pages back to the kernel: saves the `madvise` + page faults on every request.
const KEEP_RESIDENT: usize = 1 << 20;

/// The engine configuration every plugin runs under.
pub fn engine_config() -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(MAX_INSTANCES)
        .total_core_instances(MAX_INSTANCES * 4)
        .total_memories(MAX_INSTANCES)
        .total_tables(MAX_INSTANCES * 4)
        .total_stacks(MAX_INSTANCES)
        .max_memory_size(MAX_MEMORY)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        // keep_resident is only a win with PAGEMAP_SCAN (Linux >= 6.7); `Auto` falls back to
        // the plain reset on older kernels instead of refusing to start.
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // WASI 0.2 guests never use the component-model async runtime; building it into every
        // store costs ~2.7 µs per instance.
        .concurrency_support(false);
    config
}
