# zsh zsh_complete.zsh DIR LINE: type LINE and TAB in an interactive zsh (a pty of zsh/zpty)
# whose $fpath and $PATH start with DIR, and print what the terminal showed. compadd is wrapped
# to print each match the completion system adds as a line `@@MATCH`; `@@END` ends the output.
# (The markers are written split in two so that the echo of the typed commands never holds them.)
emulate -L zsh
zmodload zsh/zpty || exit 2
local dir=$1 input=$2 out='' chunk
zpty shell zsh -f -i
zpty -w shell "PROMPT='' RPROMPT=''; fpath=(${(q)dir} \$fpath); path=(${(q)dir} \$path)"
zpty -w shell 'autoload -Uz compinit && compinit -u -D && bindkey "^I" complete-word'
zpty -w shell 'compadd() { local -a m; builtin compadd -O m "$@"; print -rl -- "" "${(@)m/#/@""@}" >/dev/tty; builtin compadd "$@" }'
zpty -w shell 'comppostfuncs=(_end); _end() { print -r -- "" "@@""END" >/dev/tty }'
zpty -w -n shell "$input"$'\t'
while (( SECONDS < 30 )) && [[ $out != *@@END* ]]; do
  zpty -r -t shell chunk && out+=$chunk || sleep 0.02
done
zpty -d shell
print -r -- $out
