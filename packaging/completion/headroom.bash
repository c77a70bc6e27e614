# bash completion for headroom. Commands, flags and the values of enum options
# are read from the installed binary itself (`headroom --help`, `headroom help
# COMMAND`, `headroom config --example`), once per shell, so the completion
# cannot drift from the program it completes.

_headroom_cache() {
  local prog=$1
  [[ -n ${_headroom_commands-} && ${_headroom_prog-} == "$prog" ]] && return
  _headroom_prog=$prog
  _headroom_commands=$("$prog" --help 2>/dev/null |
    awk '/^commands:/ {on=1; next} on && /^  [a-z]/ {print $1; next} on && /^$/ {exit}')
  _headroom_globals="$("$prog" --help 2>/dev/null |
    awk '/^global options:/ {on=1; next} on && /^$/ {exit} on' |
    grep -o -- '--[a-z][a-z-]*' | sort -u) --help --version"
  # "# one of a|b|c; environment ..." precedes "#name = default".
  _headroom_enums=$("$prog" config --example 2>/dev/null |
    awk '/^# one of / {c=$4; sub(/;$/, "", c); next}
         /^#[a-z_]+ = / {if (c != "") {n=substr($1, 2); gsub(/_/, "-", n); print n "=" c}; c=""}')
}

# The choices of enum option $1 (dashes), or nothing.
_headroom_choices() {
  local line
  for line in $_headroom_enums; do
    if [[ ${line%%=*} == "$1" ]]; then
      printf '%s\n' "${line#*=}" | tr '|' '\n'
      return
    fi
  done
}

_headroom() {
  local cur prev words cword
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD-1]}
  _headroom_cache "${COMP_WORDS[0]}"

  # Values of the flag just typed.
  case $prev in
  --config | --db | --svg | -o)
    COMPREPLY=($(compgen -f -- "$cur"))
    return
    ;;
  --root)
    COMPREPLY=($(compgen -d -- "$cur"))
    return
    ;;
  --cgroup)
    COMPREPLY=($(compgen -d -- "${cur:-/sys/fs/cgroup/}"))
    return
    ;;
  --cgroup-pid | --pid)
    COMPREPLY=($(compgen -W "$(ls /proc 2>/dev/null | grep -E '^[0-9]+$')" -- "$cur"))
    return
    ;;
  --*)
    local choices
    choices=$(_headroom_choices "${prev#--}")
    if [[ -n $choices ]]; then
      COMPREPLY=($(compgen -W "$choices" -- "$cur"))
      return
    fi
    ;;
  esac

  # The command: the first word that is not a global flag or its value.
  local i cmd=
  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in
    --root | --config | --log-level | --color | --cgroup | --cgroup-pid) ((i++)) ;;
    -*) ;;
    *)
      cmd=${COMP_WORDS[i]}
      break
      ;;
    esac
  done

  if [[ -z $cmd ]]; then
    if [[ $cur == -* ]]; then
      COMPREPLY=($(compgen -W "$_headroom_globals" -- "$cur"))
    else
      COMPREPLY=($(compgen -W "$_headroom_commands help" -- "$cur"))
    fi
    return
  fi
  if [[ $cmd == help ]]; then
    COMPREPLY=($(compgen -W "$_headroom_commands" -- "$cur"))
    return
  fi
  if [[ $cur == -* ]]; then
    local flags
    flags=$("${COMP_WORDS[0]}" help "$cmd" 2>/dev/null | grep -o -- '--[a-z][a-z-]*' | sort -u)
    COMPREPLY=($(compgen -W "$flags --help" -- "$cur"))
    return
  fi
  COMPREPLY=($(compgen -f -- "$cur"))
}

complete -F _headroom headroom
