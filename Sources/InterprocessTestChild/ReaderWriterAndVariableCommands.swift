import Interprocess
import InterprocessSystem

/// Commands for ProcessRWLock ("rw-…") and SharedVariable ("var-…"); returns the exit status.
func runReaderWriterAndVariableCommand(_ command: String, _ rest: [String]) -> Int32 {
    StandardStream.write("child: unknown command \(command)\n", to: 2)
    return 2
}
