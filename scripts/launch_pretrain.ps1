#Requires -Version 5.1
<#
.SYNOPSIS
Launches minipretrain on this node: the PowerShell counterpart of
launch_pretrain.sh, for Windows PowerShell 5.1 and PowerShell 7 (Windows,
Linux, macOS).

.DESCRIPTION
Starts NPROC_PER_NODE processes that find each other through
MASTER_ADDR:MASTER_PORT, each with the torchrun environment contract:
RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
Run it once per node, with NODE_RANK 0..NNODES-1.

Settings (environment, defaults in brackets):
  NPROC_PER_NODE [1]  NNODES [1]  NODE_RANK [0]
  MASTER_ADDR [127.0.0.1]  MASTER_PORT [29500]
  TP_SIZE [1]  PP_SIZE [1]  MICRO_BATCH_SIZE [4]  MAX_STEPS [10000]
  MINIPRETRAIN_BIN [<script dir>/../build/minipretrain, or minipretrain.exe]
  LAUNCHER [builtin]: builtin | torchrun
  KILL_GRACE_SECONDS [5]: how long ranks get to stop before they are killed

Every argument goes to the binary unchanged, after the flags built from the
settings (--tensor-parallel-size, --pipeline-parallel-size, --micro-batch-size,
--max-steps); the binary takes a repeated flag's last value.

Exit status: the first failing rank's exit code; 0 when every rank succeeded;
2 for a bad setting.

Stopping:
- A rank fails: on Linux/macOS the others get SIGTERM, then are killed after
  KILL_GRACE_SECONDS. Windows has no SIGTERM for console programs, so there
  they are killed at once.
- Ctrl-C: the ranks share this console (or terminal), so they receive it
  themselves; the script then gives them KILL_GRACE_SECONDS to exit and kills
  the rest.
- SIGTERM (PowerShell 7.2+ on Linux/macOS): passed on to the ranks; a second
  SIGTERM kills them. The script exits 143.

.EXAMPLE
$env:NPROC_PER_NODE = 4; $env:TP_SIZE = 2; ./scripts/launch_pretrain.ps1 --data-dir data/tokens
#>

# No param() block on purpose: every argument lands in $args and goes to the
# binary, including ones that look like PowerShell parameters.
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$Prog = 'launch_pretrain'
# $IsWindows does not exist in Windows PowerShell 5.1 (which only runs on Windows).
$OnWindows = [Environment]::OSVersion.Platform -eq [PlatformID]::Win32NT

function Fail([string]$Message) {
    # One line on stderr and exit 2: a setting is wrong, nothing was started.
    [Console]::Error.WriteLine("${Prog}: error: $Message")
    exit 2
}
function Log([string]$Message) { [Console]::Error.WriteLine("${Prog}: $Message") }

# An unset or empty variable takes the default, as ${VAR:-default} does in bash.
function Get-Setting([string]$Name, [string]$Default) {
    $value = [Environment]::GetEnvironmentVariable($Name)
    if ([string]::IsNullOrEmpty($value)) { return $Default }
    return $value
}

# Numbers passed unquoted arrive as [int]; the binary wants text.
$UserArgs = @(foreach ($a in $args) { [string]$a })

$Settings = [ordered]@{
    NPROC_PER_NODE     = Get-Setting 'NPROC_PER_NODE' '1'
    NNODES             = Get-Setting 'NNODES' '1'
    NODE_RANK          = Get-Setting 'NODE_RANK' '0'
    MASTER_ADDR        = Get-Setting 'MASTER_ADDR' '127.0.0.1'
    MASTER_PORT        = Get-Setting 'MASTER_PORT' '29500'
    TP_SIZE            = Get-Setting 'TP_SIZE' '1'
    PP_SIZE            = Get-Setting 'PP_SIZE' '1'
    MICRO_BATCH_SIZE   = Get-Setting 'MICRO_BATCH_SIZE' '4'
    MAX_STEPS          = Get-Setting 'MAX_STEPS' '10000'
    LAUNCHER           = Get-Setting 'LAUNCHER' 'builtin'
    KILL_GRACE_SECONDS = Get-Setting 'KILL_GRACE_SECONDS' '5'
}
$Bin = Get-Setting 'MINIPRETRAIN_BIN' ([IO.Path]::Combine($PSScriptRoot, '..', 'build', 'minipretrain'))

# ---- validation: fail before anything starts, with the setting's name --------
# \z rather than $: in .NET, $ also matches before a trailing newline.
foreach ($name in 'NPROC_PER_NODE', 'NNODES', 'MASTER_PORT', 'TP_SIZE', 'PP_SIZE',
    'MICRO_BATCH_SIZE', 'MAX_STEPS', 'KILL_GRACE_SECONDS') {
    if ($Settings[$name] -notmatch '^[1-9][0-9]{0,8}\z') {
        Fail "$name must be a positive integer, got '$($Settings[$name])'"
    }
}
if ($Settings.NODE_RANK -notmatch '^(0|[1-9][0-9]{0,8})\z') {
    Fail "NODE_RANK must be a non-negative integer, got '$($Settings.NODE_RANK)'"
}
$NprocPerNode = [int]$Settings.NPROC_PER_NODE
$NNodes = [int]$Settings.NNODES
$NodeRank = [int]$Settings.NODE_RANK
$Grace = [int]$Settings.KILL_GRACE_SECONDS
$WorldSize = [long]$NNodes * $NprocPerNode
if ($NodeRank -ge $NNodes) { Fail "NODE_RANK=$NodeRank must be below NNODES=$NNodes" }
if ([int]$Settings.MASTER_PORT -gt 65535) { Fail "MASTER_PORT must be at most 65535, got $($Settings.MASTER_PORT)" }
if ($Settings.LAUNCHER -cnotin 'builtin', 'torchrun') {
    Fail "LAUNCHER must be 'builtin' or 'torchrun', got '$($Settings.LAUNCHER)'"
}

# A bare name (no directory part) is looked up on PATH, like any command.
if ($Bin -notmatch '[\\/]') {
    $found = @(Get-Command -Name $Bin -CommandType Application -ErrorAction SilentlyContinue)
    if ($found.Count -gt 0) { $Bin = $found[0].Source }
}
# Relative paths are relative to PowerShell's current location, which need not
# be the process's working directory.
$Bin = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($Bin)
if ($OnWindows -and -not (Test-Path -LiteralPath $Bin -PathType Leaf) -and (Test-Path -LiteralPath "$Bin.exe" -PathType Leaf)) {
    $Bin = "$Bin.exe"
}
if (-not (Test-Path -LiteralPath $Bin -PathType Leaf)) {
    Fail "MINIPRETRAIN_BIN '$Bin' is not a file (build it, or set MINIPRETRAIN_BIN)"
}
$Torchrun = $null
if ($Settings.LAUNCHER -ceq 'torchrun') {
    $Torchrun = @(Get-Command -Name torchrun -CommandType Application -ErrorAction SilentlyContinue) | Select-Object -First 1
    if (-not $Torchrun) { Fail "LAUNCHER=torchrun but torchrun is not on PATH" }
}

# ---- the binary's command line ---------------------------------------------
# The user's arguments come last: minipretrain takes the last occurrence of a
# repeated flag, so they override the flags built from the settings.
$BinArgs = New-Object System.Collections.Generic.List[string]
foreach ($a in @('--tensor-parallel-size', $Settings.TP_SIZE, '--pipeline-parallel-size', $Settings.PP_SIZE,
        '--micro-batch-size', $Settings.MICRO_BATCH_SIZE, '--max-steps', $Settings.MAX_STEPS)) { $BinArgs.Add([string]$a) }
foreach ($a in $UserArgs) { $BinArgs.Add($a) }

# Start-Process joins an -ArgumentList array with spaces and quotes nothing, so
# an argument with a space would split in two. Build the one command-line
# string ourselves, quoted the way the C runtime (and .NET on Linux/macOS)
# splits it again: backslashes are literal except before a quote, where they
# must be doubled.
function ConvertTo-CommandLineArgument([string]$Arg) {
    if ($Arg.Length -gt 0 -and $Arg -notmatch '[\s"]') { return $Arg }
    $quoted = '"'
    $backslashes = 0
    foreach ($c in $Arg.ToCharArray()) {
        if ($c -eq [char]'\') { $backslashes++; continue }
        if ($c -eq [char]'"') { $quoted += ('\' * (2 * $backslashes + 1)) + '"' }
        else { $quoted += ('\' * $backslashes) + $c }
        $backslashes = 0
    }
    return $quoted + ('\' * (2 * $backslashes)) + '"'
}
$ArgumentString = (@(foreach ($a in $BinArgs) { ConvertTo-CommandLineArgument $a }) -join ' ')

# ---- environment -------------------------------------------------------------
# Variables this script sets or removes. Run as ./launch_pretrain.ps1 from a
# PowerShell prompt, the script shares the prompt's environment, so every one
# is put back as it was at the end.
$TouchedVars = @('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT',
    'OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_LOCAL_SIZE',
    'PMI_RANK', 'PMI_SIZE', 'MPI_LOCALRANKID', 'MPI_LOCALNRANKS')
$SavedEnv = @{}
foreach ($name in $TouchedVars) { $SavedEnv[$name] = [Environment]::GetEnvironmentVariable($name) }
function Restore-Environment {
    foreach ($name in $TouchedVars) { [Environment]::SetEnvironmentVariable($name, $SavedEnv[$name]) }
}

# The binary reads several launchers' variables and refuses to start when two
# of them disagree. Variables inherited from an outer launcher (mpiexec, say)
# describe that launcher's process, not ours; the ranks must not see them.
# SLURM_* may stay: the binary ignores them once it has found RANK/WORLD_SIZE.
foreach ($name in $TouchedVars) {
    if ($name -like 'OMPI_*' -or $name -like 'PMI_*' -or $name -like 'MPI_*') {
        [Environment]::SetEnvironmentVariable($name, $null)
    }
}
$env:MASTER_ADDR = $Settings.MASTER_ADDR
$env:MASTER_PORT = $Settings.MASTER_PORT

Log ("launching $Bin via $($Settings.LAUNCHER): $NNodes node(s) x $NprocPerNode proc(s)/node, " +
    "world size $WorldSize, node rank $NodeRank, master $($Settings.MASTER_ADDR):$($Settings.MASTER_PORT)")

# ---- torchrun: it does the spawning, signal handling and teardown -----------
if ($Settings.LAUNCHER -ceq 'torchrun') {
    try {
        & $Torchrun.Source --nnodes $NNodes --node_rank $NodeRank --nproc_per_node $NprocPerNode `
            --master_addr $Settings.MASTER_ADDR --master_port $Settings.MASTER_PORT `
            --no_python $Bin @($BinArgs)
        $code = $LASTEXITCODE
    } finally {
        Restore-Environment
    }
    exit $code
}

# ---- builtin launcher --------------------------------------------------------
# SIGTERM: .NET would end this process at once, leaving the ranks running. On
# .NET 6+ (PowerShell 7.2+) a PosixSignalRegistration can cancel that and count
# the signals instead, for the wait loop to act on. Its handler runs on a
# thread without a PowerShell runspace, so it is C#, not a script block.
$TermTrap = $false
if (-not $OnWindows -and [Environment]::Version.Major -ge 6) {
    try {
        if (-not ('MiniPretrainLaunchSignals' -as [type])) {
            Add-Type -TypeDefinition @'
using System.Runtime.InteropServices;
using System.Threading;

public static class MiniPretrainLaunchSignals {
    private static PosixSignalRegistration registration;
    private static int count;

    public static int Count { get { return Volatile.Read(ref count); } }

    public static void Install() {
        Interlocked.Exchange(ref count, 0);
        if (registration != null) return;
        registration = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context => {
            context.Cancel = true;  // keep running: the wait loop passes it on
            Interlocked.Increment(ref count);
        });
    }

    public static void Uninstall() {
        if (registration != null) { registration.Dispose(); registration = null; }
    }
}
'@
        }
        [MiniPretrainLaunchSignals]::Install()
        $TermTrap = $true
    } catch {
        Log "warning: SIGTERM will not reach the ranks ($($_.Exception.Message))"
    }
}

# Graceful stop on Linux/macOS: SIGTERM through the system's kill. (In
# PowerShell 7 on those systems `kill` is an alias of Stop-Process, which sends
# SIGKILL, hence the explicit application lookup.)
$KillCommand = $null
if (-not $OnWindows) {
    $KillCommand = @(Get-Command -Name kill -CommandType Application -ErrorAction SilentlyContinue) | Select-Object -First 1
}
function Send-Term($Rank) {
    if ($KillCommand -and -not $Rank.Process.HasExited) {
        # A rank that exits meanwhile makes kill fail; that is fine.
        try { & $KillCommand.Source -s TERM $Rank.Process.Id 2>$null } catch { }
    }
}
function Stop-Rank($Rank) {
    try { if (-not $Rank.Process.HasExited) { $Rank.Process.Kill() } } catch { }
}

$Ranks = New-Object System.Collections.Generic.List[object]
$ExitCode = 0
$Stopping = ''      # '', 'failure' or 'signal'
$Completed = $false # false in `finally` means Ctrl-C (or an error) cut the script short
$TermsSeen = 0
try {
    $env:WORLD_SIZE = [string]$WorldSize
    $env:LOCAL_WORLD_SIZE = [string]$NprocPerNode
    for ($i = 0; $i -lt $NprocPerNode; $i++) {
        # A started process takes a copy of this process's environment, so
        # setting the per-rank variables just before each start gives every
        # rank its own.
        $env:RANK = [string]([long]$NodeRank * $NprocPerNode + $i)
        $env:LOCAL_RANK = [string]$i
        try {
            $proc = Start-Process -FilePath $Bin -ArgumentList $ArgumentString -NoNewWindow -PassThru `
                -WorkingDirectory (Get-Location -PSProvider FileSystem).ProviderPath
        } catch {
            foreach ($r in $Ranks) { Stop-Rank $r }
            Restore-Environment
            Fail "could not start '$Bin': $($_.Exception.Message)"
        }
        # Windows PowerShell reports ExitCode as empty for a process that has
        # exited unless its handle was opened while it ran: open it now.
        $null = $proc.Handle
        $Ranks.Add([pscustomobject]@{ Rank = [long]$NodeRank * $NprocPerNode + $i; LocalRank = $i; Process = $proc; Done = $false })
    }

    # Poll every 200 ms: a rank that exits is noticed within that time.
    $live = $Ranks.Count
    while ($live -gt 0) {
        if ($TermTrap) {
            $terms = [MiniPretrainLaunchSignals]::Count
            if ($terms -gt $TermsSeen) {
                $TermsSeen = $terms
                if ($Stopping -eq '') {
                    $Stopping = 'signal'
                    $ExitCode = 143
                    Log "got SIGTERM, passing it to $live rank(s) (a second SIGTERM kills them)"
                    foreach ($r in $Ranks) { if (-not $r.Done) { Send-Term $r } }
                } else {
                    Log "got SIGTERM while stopping, killing $live rank(s)"
                    foreach ($r in $Ranks) { if (-not $r.Done) { Stop-Rank $r } }
                }
            }
        }
        foreach ($r in $Ranks) {
            if ($r.Done -or -not $r.Process.HasExited) { continue }
            $r.Process.WaitForExit()  # lets the exit code settle
            $r.Done = $true
            $live--
            $code = $r.Process.ExitCode
            if ($code -ne 0 -and $Stopping -eq '') {
                $Stopping = 'failure'
                $ExitCode = $code
                Log ("rank $($r.Rank) (local rank $($r.LocalRank), pid $($r.Process.Id)) exited with code $code; " +
                    "stopping the other $live rank(s)")
                # Ranks blocked in a collective with the failed one would
                # otherwise hang until their own timeout.
                $others = @(foreach ($o in $Ranks) { if (-not $o.Done) { $o } })
                if ($others.Count -gt 0) {
                    if ($KillCommand) {
                        foreach ($o in $others) { Send-Term $o }
                        $deadline = [DateTime]::UtcNow.AddSeconds($Grace)
                        while ([DateTime]::UtcNow -lt $deadline -and
                            @(foreach ($o in $others) { if (-not $o.Process.HasExited) { $o } }).Count -gt 0) {
                            Start-Sleep -Milliseconds 100
                        }
                        if (@(foreach ($o in $others) { if (-not $o.Process.HasExited) { $o } }).Count -gt 0) {
                            Log "ranks still alive after ${Grace}s, killing them"
                        }
                    }
                    foreach ($o in $others) { Stop-Rank $o }
                }
            }
        }
        if ($live -gt 0) { Start-Sleep -Milliseconds 200 }
    }
    $Completed = $true
} finally {
    # Reached as well when Ctrl-C stops the script. The ranks got the Ctrl-C
    # from the console themselves; give them the grace period to exit cleanly,
    # then kill what is left. Only .NET calls here: PowerShell cmdlets may
    # refuse to run while the script is being stopped.
    if (-not $Completed) {
        $deadline = [DateTime]::UtcNow.AddSeconds($Grace)
        foreach ($r in $Ranks) {
            $left = [int][Math]::Max(0, ($deadline - [DateTime]::UtcNow).TotalMilliseconds)
            if (-not $r.Process.WaitForExit($left)) {
                [Console]::Error.WriteLine("${Prog}: rank $($r.Rank) still running after ${Grace}s, killing it")
                try { $r.Process.Kill() } catch { }
            }
        }
    }
    if ($TermTrap) { [MiniPretrainLaunchSignals]::Uninstall() }
    Restore-Environment
}

if ($Stopping -eq 'failure') { Log "exiting with code $ExitCode" }
exit $ExitCode
