{#
    The newest row per key of a raw table: the platform's staging models open with this step
    because a key (a user, an enrollment) can appear in several courses' exports. "Newest" is
    the export file's modification time; the course and line only make ties deterministic.
#}
{% macro deduplicate_raw_table(partition_columns='id') %}
    , source_sorted as (
        select
            *
            , row_number() over (
                partition by {{ partition_columns }}
                order by _dlt_file_modified desc, _course_id desc, _source_line desc
            ) as row_num
        from source
    )

    , most_recent_source as (
        select * from source_sorted
        where row_num = 1
    )
{% endmacro %}
