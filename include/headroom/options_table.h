/* The one table of options. Each row: name, type, default (text), min, max,
 * choices (enums), help. The environment variable is HEADROOM_<NAME> in upper
 * case. Ranges of sizes are in bytes, of durations in seconds. Keep rows
 * grouped by the part that reads them.
 *
 * Code reads an option by its identifier, HR_OPTION_<name> (hr_option_id_t,
 * generated from this table in headroom.h), so a misspelt name does not
 * compile. Every environment variable headroom reads is a row here, so
 * `headroom config` shows all of them. */
#ifndef HEADROOM_OPTIONS_TABLE_H
#define HEADROOM_OPTIONS_TABLE_H

#define HR_OPTION_TABLE(X)                                                                         \
  /* general */                                                                                    \
  X(config, HR_OPT_STRING, "", 0, 0, NULL,                                                         \
    "config file (default $XDG_CONFIG_HOME/headroom/headroom.conf); environment only")             \
  X(root, HR_OPT_STRING, "/", 0, 0, NULL, "root directory that /proc and /sys are read under")     \
  X(log_level, HR_OPT_ENUM, "warn", 0, 0, "debug|info|warn|error", "lowest log level shown")       \
  X(color, HR_OPT_ENUM, "auto", 0, 0, "auto|always|never", "colour on a terminal")                 \
  X(no_progress, HR_OPT_BOOL, "false", 0, 0, NULL, "no progress bar on a terminal")                \
  /* probe */                                                                                      \
  X(nvml_library, HR_OPT_STRING, "", 0, 0, NULL,                                                   \
    "NVML library to load (default libnvidia-ml.so.1, then libnvidia-ml.so)")                      \
  X(cgroup, HR_OPT_STRING, "", 0, 0, NULL,                                                         \
    "memory cgroup to read: a directory under /sys/fs/cgroup, or a path as /proc/PID/cgroup "      \
    "shows it (default: headroom's own)")                                                          \
  X(cgroup_pid, HR_OPT_INT, "0", 0, 4194304, NULL,                                                 \
    "read the memory cgroup of this process (a pid as seen under --root; 0: headroom's own)")      \
  /* status and watch */                                                                           \
  X(top, HR_OPT_INT, "10", 1, 100000, NULL, "processes shown, largest first")                      \
  X(filter, HR_OPT_STRING, "", 0, 0, NULL, "comma-separated names matched in name or cmdline")     \
  X(pss, HR_OPT_BOOL, "false", 0, 0, NULL,                                                         \
    "read PSS (smaps_rollup) of the processes shown; costs ms per large process")                  \
  X(interval, HR_OPT_DURATION, "1s", 0.01, 86400, NULL, "time between samples")                    \
  X(mode, HR_OPT_ENUM, "conservative", 0, 0, "conservative|balanced|aggressive",                   \
    "what watch, free_memory and the ComfyUI nodes free (docs/freeing-memory.md)")                 \
  X(ram_warn, HR_OPT_PERCENT, "80", 1, 100, NULL, "host or cgroup memory use that warns")          \
  X(ram_critical, HR_OPT_PERCENT, "90", 1, 100, NULL,                                              \
    "host or cgroup memory use that is critical")                                                  \
  X(vram_warn, HR_OPT_PERCENT, "85", 1, 100, NULL, "GPU memory use that warns")                    \
  X(vram_critical, HR_OPT_PERCENT, "95", 1, 100, NULL, "GPU memory use that is critical")          \
  X(leak_window, HR_OPT_DURATION, "10m", 1, 7 * 86400, NULL, "window of the leak trend test")      \
  X(cooldown, HR_OPT_DURATION, "60s", 0, 86400, NULL, "least time between two actions")            \
  X(on_warning, HR_OPT_STRING, "", 0, 0, NULL, "command run at a warning (balanced mode)")         \
  X(on_critical, HR_OPT_STRING, "", 0, 0, NULL, "command run at a critical level")                 \
  X(listen, HR_OPT_STRING, "127.0.0.1:10460", 0, 0, NULL, "exporter address, or none")             \
  X(metrics_top, HR_OPT_INT, "5", 0, 1000, NULL,                                                   \
    "processes without GPU memory in /metrics besides the GPU holders, largest RSS first")         \
  X(db, HR_OPT_STRING, "", 0, 0, NULL, "history database (default under $XDG_STATE_HOME)")         \
  X(retain, HR_OPT_DURATION, "7d", 60, 3650.0 * 86400, NULL, "history kept")                       \
  X(hysteresis, HR_OPT_PERCENT, "3", 0, 50, NULL,                                                  \
    "points under a threshold before a level clears")                                              \
  X(leak_min_rate, HR_OPT_SIZE, "2M", 1, 1099511627776.0, NULL,                                    \
    "growth per minute a leak must exceed to alarm")                                               \
  X(leak_min_samples, HR_OPT_INT, "30", 8, 100000, NULL, "samples a leak alarm needs at least")    \
  X(idle_share, HR_OPT_PERCENT, "20", 0, 100, NULL, "GPU memory share an idle hog holds at least") \
  X(idle_util, HR_OPT_PERCENT, "10", 0, 100, NULL, "GPU utilisation under which a GPU is idle")    \
  X(idle_samples, HR_OPT_INT, "60", 1, 1000000, NULL, "idle samples in a row before an idle hog")  \
  X(action_timeout, HR_OPT_DURATION, "10s", 0.1, 3600, NULL, "time a hook command may run")        \
  X(allow_drop_caches, HR_OPT_BOOL, "false", 0, 0, NULL,                                           \
    "aggressive mode may write /proc/sys/vm/drop_caches (root only)")                              \
  X(history_flush, HR_OPT_DURATION, "5s", 0, 3600, NULL, "time between history commits")           \
  X(proc_budget, HR_OPT_PERCENT, "1", 0.01, 100, NULL,                                             \
    "share of a core reading processes may take; many processes are read less often")              \
  /* broker */                                                                                     \
  X(budget, HR_OPT_STRING, "", 0, 0, NULL,                                                         \
    "what the broker may hand out per resource: host=16G,gpu0=20G (default: all)")                 \
  X(broker_socket, HR_OPT_STRING, "", 0, 0, NULL,                                                  \
    "broker socket (default $XDG_RUNTIME_DIR/headroom/broker.sock), or none")                      \
  X(broker_group, HR_OPT_STRING, "", 0, 0, NULL,                                                   \
    "group that may use the broker socket (mode 0660); empty: its owner only (0600)")              \
  X(broker_max_conns, HR_OPT_INT, "32", 1, 100000, NULL, "broker connections one user may hold")   \
  X(broker_max_leases, HR_OPT_INT, "64", 1, 100000, NULL, "broker leases one connection may hold") \
  X(broker_max_queued, HR_OPT_INT, "16", 1, 100000, NULL,                                          \
    "broker reservations one connection may have waiting")                                         \
  X(broker_timeout, HR_OPT_DURATION, "5s", 0.01, 600, NULL,                                        \
    "time a broker client or adapter has to answer a release request")                             \
  X(broker_adapters, HR_OPT_STRING, "", 0, 0, NULL,                                                \
    "programs asked through their own API: KIND[@DEVICE]=URL,... (comfyui, ollama, vllm)")         \
  X(broker_adapter_priority, HR_OPT_INT, "0", -1000000, 1000000, NULL,                             \
    "priority the broker gives the programs of broker_adapters")                                   \
  X(comfy_agent, HR_OPT_BOOL, "true", 0, 0, NULL,                                                  \
    "inside ComfyUI, register with the broker when one runs (the node pack)")                      \
  /* backend and pool */                                                                           \
  X(libcuda, HR_OPT_STRING, "", 0, 0, NULL, "CUDA driver library to load (default libcuda.so.1)")  \
  X(lib, HR_OPT_STRING, "", 0, 0, NULL,                                                            \
    "libheadroom the Python package loads (read by Python before the library)")                    \
  X(pool_backend, HR_OPT_ENUM, "cuda", 0, 0, "cuda|host|sim",                                      \
    "backend of the pool PyTorch allocates from (host and sim are for tests)")                     \
  X(alloc_conf, HR_OPT_STRING, "", 0, 0, NULL,                                                     \
    "pool configuration, PYTORCH_CUDA_ALLOC_CONF syntax")                                          \
  /* residency */                                                                                  \
  X(reserve, HR_OPT_SIZE, "400M", 0, 1099511627776.0, NULL, "device memory residency keeps free")  \
  X(patience, HR_OPT_DURATION, "5s", 0, 600, NULL, "wait for offloaded memory to show as free")    \
  X(residency_policy, HR_OPT_ENUM, "auto", 0, 0, "auto|comfy|lru|lookahead",                       \
    "which assets residency offloads first")

#endif /* HEADROOM_OPTIONS_TABLE_H */
