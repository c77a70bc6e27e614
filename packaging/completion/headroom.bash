# bash completion for headroom, written by `headroom __completion` from the
# CLI's option tables: edit those (tools/headroom), then run `make packaging`.

_headroom() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
  local i j cmd= opts
  # The command: the first word that is not a global option or its value.
  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in
    --root | --config | --cgroup | --cgroup-pid | --log-level | --color) ((i++)) ;;
    -*) ;;
    *)
      cmd=${COMP_WORDS[i]}
      break
      ;;
    esac
  done
  # After "--" (reserve SIZE -- CMD ARGS): a program, then its arguments.
  for ((j = i + 1; j < COMP_CWORD; j++)); do
    if [[ ${COMP_WORDS[j]} == -- ]]; then
      if ((j + 1 == COMP_CWORD)); then
        COMPREPLY=($(compgen -c -- "$cur"))
      else
        COMPREPLY=($(compgen -f -- "$cur"))
      fi
      return
    fi
  done
  # The value of the option just typed.
  case $cmd:$prev in
  :--root)
    COMPREPLY=($(compgen -d -- "$cur"))
    return
    ;;
  :--config | watch:--db | history:--svg | history:--db | \
    replay:--svg | doctor:--db | broker:--socket | reserve:--db | \
    reserve:--socket)
    COMPREPLY=($(compgen -f -- "$cur"))
    return
    ;;
  :--cgroup)
    COMPREPLY=($(compgen -d -- "${cur:-/sys/fs/cgroup/}"))
    return
    ;;
  :--cgroup-pid | history:--pid)
    COMPREPLY=($(compgen -W "$(ls /proc 2>/dev/null | grep -E '^[0-9]+$')" -- "$cur"))
    return
    ;;
  :--log-level)
    COMPREPLY=($(compgen -W 'debug info warn error' -- "$cur"))
    return
    ;;
  :--color)
    COMPREPLY=($(compgen -W 'auto always never' -- "$cur"))
    return
    ;;
  status:--top | status:--filter | watch:--interval | watch:--filter | \
    watch:--top | watch:--ram-warn | watch:--ram-critical | watch:--vram-warn | \
    watch:--vram-critical | watch:--hysteresis | watch:--leak-window | watch:--leak-min-rate | \
    watch:--leak-min-samples | watch:--idle-share | watch:--idle-util | watch:--idle-samples | \
    watch:--on-warning | watch:--on-critical | watch:--cooldown | watch:--action-timeout | \
    watch:--proc-budget | watch:--listen | watch:--metrics-top | watch:--retain | \
    watch:--history-flush | watch:--budget | watch:--count | history:--since | \
    history:--ram-warn | history:--ram-critical | history:--vram-warn | history:--vram-critical | \
    history:--hysteresis | history:--leak-min-rate | history:--leak-min-samples | replay:--conf | \
    replay:--capacity | plan:--budget | doctor:--listen | reserve:--device | \
    reserve:--timeout | reserve:--lease | reserve:--priority | reserve:--margin | \
    reserve:--first-run)
    COMPREPLY=()
    return
    ;;
  watch:--mode)
    COMPREPLY=($(compgen -W 'conservative balanced aggressive' -- "$cur"))
    return
    ;;
  replay:--backend)
    COMPREPLY=($(compgen -W 'sim host' -- "$cur"))
    return
    ;;
  plan:--policy)
    COMPREPLY=($(compgen -W 'auto comfy lru lookahead' -- "$cur"))
    return
    ;;
  esac
  local commands='config status watch history replay plan doctor broker reserve'
  case $cmd in
  '')
    opts='--root --config --cgroup --cgroup-pid --log-level --color --version --help'
    ;;
  help)
    COMPREPLY=($(compgen -W "$commands" -- "$cur"))
    return
    ;;
  config)
    opts='--json --example --help'
    ;;
  status)
    opts='--json --top --filter --pss --help'
    ;;
  watch)
    opts='--interval --filter --top --mode --ram-warn --ram-critical --vram-warn --vram-critical --hysteresis --leak-window --leak-min-rate --leak-min-samples --idle-share --idle-util --idle-samples --on-warning --on-critical --cooldown --action-timeout --allow-drop-caches --proc-budget --listen --metrics-top --db --retain --history-flush --budget --json --once --count --help'
    ;;
  history)
    opts='--since --pid --json --svg --db --ram-warn --ram-critical --vram-warn --vram-critical --hysteresis --leak-min-rate --leak-min-samples --help'
    ;;
  replay)
    opts='--conf --capacity --backend --json --svg --help'
    ;;
  plan)
    opts='--budget --policy --json --help'
    ;;
  doctor)
    opts='--json --listen --db --help'
    ;;
  broker)
    opts='--socket --json --schema --help'
    ;;
  reserve)
    opts='--device --timeout --lease --priority --margin --first-run --db --socket --json --help'
    ;;
  *)
    opts=--help
    ;;
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  elif [[ -z $cmd ]]; then
    COMPREPLY=($(compgen -W "$commands help" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}

complete -F _headroom headroom
