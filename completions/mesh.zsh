#compdef mesh

_mesh_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _MESH_COMPLETE=complete_zsh mesh)
}

compdef _mesh_completion mesh
