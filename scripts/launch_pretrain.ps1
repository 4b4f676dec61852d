#Requires -Version 7.0
# Not run by CI (no PowerShell on its machines). Unlike launch_pretrain.sh: no MAX_RESTARTS, LAUNCHER=torchrun,
# signal forwarding or stopping of the other ranks when one fails (they fail on their own when a peer dies).
#
# Starts NPROC_PER_NODE ranks of minipretrain on this node with torchrun's variables (RANK, WORLD_SIZE,
# LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), which the binary reads and checks itself.
# Run it once per node, with NODE_RANK 0..NNODES-1. Settings (environment, defaults in brackets), named as in
# launch_pretrain.sh:
#   NPROC_PER_NODE [1]  NNODES [1]  NODE_RANK [0]  MASTER_ADDR [127.0.0.1]  MASTER_PORT [29500]
#   MINIPRETRAIN_BIN [<script dir>/../build/minipretrain]
#   TP_SIZE, PP_SIZE, MICRO_BATCH_SIZE, MAX_STEPS: when set, --tensor-parallel-size, --pipeline-parallel-size,
#     --micro-batch-size, --max-steps. Every argument goes to the binary after them: it takes a repeated
#     flag's last value.
# Exit status: the code of the rank that failed first; 0 when every rank succeeded.
#
#   $env:NPROC_PER_NODE = 4; $env:TP_SIZE = 2; ./scripts/launch_pretrain.ps1 --config configs/tiny.json
#
# PowerShell 7 for ProcessStartInfo.ArgumentList, which quotes each argument; minipretrain builds only on
# Linux and macOS, where Windows PowerShell 5.1 does not run anyway.
# No param() block: every argument, even one that looks like a PowerShell parameter, lands in $args.
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

function Get-Setting([string]$Name, [string]$Default) {  # unset or empty: the default, as ${VAR:-default}
    $value = [Environment]::GetEnvironmentVariable($Name)
    if ($value) { $value } else { $Default }
}
function Get-Count([string]$Name, [int]$Default, [int]$Min) {  # the ranks' numbers are computed from these
    $text = Get-Setting $Name $Default
    $n = 0
    if (-not [int]::TryParse($text, [ref]$n) -or $n -lt $Min) {
        [Console]::Error.WriteLine("launch_pretrain: error: $Name must be an integer >= $Min, got '$text'")
        exit 2
    }
    $n
}
$Nproc = Get-Count NPROC_PER_NODE 1 1
$NNodes = Get-Count NNODES 1 1
$NodeRank = Get-Count NODE_RANK 0 0

# A path is taken from PowerShell's location, which need not be the process's working directory; a bare
# name is looked up on PATH.
$Bin = Get-Setting MINIPRETRAIN_BIN "$PSScriptRoot/../build/minipretrain"
if ($Bin -match '[\\/]') { $Bin = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($Bin) }

# Only the settings given become flags: one always passed would override the value in a --config file.
$Flags = [ordered]@{ TP_SIZE = '--tensor-parallel-size'; PP_SIZE = '--pipeline-parallel-size'
    MICRO_BATCH_SIZE = '--micro-batch-size'; MAX_STEPS = '--max-steps' }
$BinArgs = @(foreach ($name in $Flags.Keys) { $value = Get-Setting $name ''; if ($value) { $Flags[$name]; $value } })
$BinArgs += @(foreach ($a in $args) { [string]$a })  # unquoted numbers arrive as numbers

$Cwd = (Get-Location -PSProvider FileSystem).ProviderPath
$Procs = @(foreach ($i in 0..($Nproc - 1)) {
    $psi = [Diagnostics.ProcessStartInfo]::new($Bin)
    foreach ($a in $BinArgs) { $psi.ArgumentList.Add($a) }
    $psi.WorkingDirectory = $Cwd
    # Each rank's own copy of the environment: this PowerShell session's is left as it was.
    $vars = $psi.Environment
    $vars['RANK'] = [string]($NodeRank * $Nproc + $i)
    $vars['LOCAL_RANK'] = [string]$i
    $vars['WORLD_SIZE'] = [string]($NNodes * $Nproc)
    $vars['LOCAL_WORLD_SIZE'] = [string]$Nproc
    $vars['MASTER_ADDR'] = Get-Setting MASTER_ADDR '127.0.0.1'
    $vars['MASTER_PORT'] = Get-Setting MASTER_PORT '29500'
    [Diagnostics.Process]::Start($psi)
})

# Ctrl-C needs no forwarding: the ranks share the terminal, get it themselves, save and stop.
foreach ($p in $Procs) { $p.WaitForExit() }
$Failed = @(0..($Nproc - 1) | Where-Object { $Procs[$_].ExitCode -ne 0 } | Sort-Object { $Procs[$_].ExitTime })
if ($Failed.Count -gt 0) {  # not `if ($Failed)`: @(0), local rank 0 alone, is false
    $code = $Procs[$Failed[0]].ExitCode
    [Console]::Error.WriteLine("launch_pretrain: rank $($NodeRank * $Nproc + $Failed[0]) failed first, exit code $code")
    exit $code
}
exit 0
